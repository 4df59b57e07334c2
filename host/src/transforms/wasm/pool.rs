//! The `wasm` transform's workers: component instances, each with its own store, on
//! threads of their own. The transform hands them batches in the order they arrive, any
//! batch to whichever worker is free, and takes the results back in that same order, so
//! everything after the component (holdback, waiting outputs, acknowledgements, what
//! sinks see) goes on exactly as with one worker.

use super::swap::Generation;
use crate::batch::SharedBatch;
use crate::metadata::Table;
use crate::runtime::{CallError, ProcessOptions, Processed, Runtime, RuntimeError, WorkerLimits};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One batch for a worker.
struct Job {
    batch: SharedBatch,
    options: Arc<ProcessOptions>,
    table: Arc<Table>,
    generation: Arc<Generation>,
    limits: WorkerLimits,
    reply: SyncSender<Result<Processed, CallError>>,
}

/// A batch handed to the pool; its result comes from [`Pending::wait`].
pub struct Pending {
    reply: Receiver<Result<Processed, CallError>>,
}

impl Pending {
    /// Waits for the batch's result.
    pub fn wait(self) -> Result<Processed, CallError> {
        self.reply.recv().unwrap_or_else(|_| {
            Err(CallError::Runtime(RuntimeError::Trap(
                wasmtime::Error::msg("the worker thread ended before the batch did"),
            )))
        })
    }
}

/// Worker threads sharing one queue of batches.
pub struct Pool {
    jobs: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `workers` threads, each with its own instance of `generation`'s component.
    pub fn start(
        id: &str,
        workers: usize,
        runtime: &Runtime,
        generation: &Arc<Generation>,
        limits: &WorkerLimits,
    ) -> Result<Pool, RuntimeError> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(workers);
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::with_capacity(workers);
        for n in 0..workers {
            let mut worker = runtime.worker(&generation.component, limits)?;
            let mut running = generation.number;
            let queue = queue.clone();
            threads.push(crate::transforms::spawn(&format!("{id}.{n}"), move || {
                loop {
                    // Holding the lock only to take a job: the others wait for theirs.
                    let job = queue.lock().expect("pool queue").recv();
                    let Ok(job) = job else { return };
                    worker.set_limits(&job.limits);
                    if job.generation.number != running {
                        worker.set_component(&job.generation.component);
                        running = job.generation.number;
                    }
                    let result = worker.process_with(&job.batch.text, &job.options, &job.table);
                    // The transform may have stopped waiting (it is ending).
                    let _ = job.reply.send(result);
                }
            }));
        }
        Ok(Pool {
            jobs: Some(jobs),
            threads,
        })
    }

    /// Hands a batch, prepared by the transform, to the next free worker (waiting
    /// while every worker has one queued).
    pub(super) fn submit(&self, batch: SharedBatch, prepared: &super::Prepared) -> Pending {
        let (reply, result) = std::sync::mpsc::sync_channel(1);
        let job = Job {
            batch,
            options: prepared.options.clone(),
            table: prepared.table.clone(),
            generation: prepared.generation.clone(),
            limits: prepared.limits.clone(),
            reply,
        };
        if let Some(jobs) = &self.jobs {
            // A worker thread that ended (it cannot, short of a panic) drops the reply,
            // which `wait` reports.
            let _ = jobs.send(job);
        }
        Pending { reply: result }
    }

    /// How many workers.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// True when there is no worker.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends every thread once it has finished its batch.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
