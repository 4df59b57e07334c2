//! The `wasm` transform: every batch goes through the enrichment component against one
//! metadata snapshot. Enriched JSON goes to the transform's output; rejected lines go to
//! `<id>.dead_letter` as `{"error", "line", "component", "stream"}` objects.

mod build;
mod config;
mod live;
mod pool;
pub mod swap;

pub use build::{ComponentCache, WasmPlan, precompile};
pub use config::Config;

use crate::batch::{Columns, LineBatch, SharedBatch};
use crate::metadata::{SharedTable, Table};
use crate::metrics::ComponentMetrics;
use crate::runtime::{CallError, ProcessOptions, RuntimeError, Worker, WorkerLimits};
use crate::topology::output::Output;
use crate::topology::output::{Ended, Input};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// How many dead letters are logged when no sink takes them (all are counted).
pub const LOGGED_DEAD_LETTERS: u64 = 20;

/// A running `wasm` transform.
pub struct WasmTransform {
    /// Component id, for dead letters and logs.
    pub id: String,
    /// The component instance of the transform's own thread (held lines, and every
    /// batch when there is no pool).
    pub worker: Worker,
    /// Workers on threads of their own, when the transform has more than one.
    pub pool: Option<pool::Pool>,
    /// The component to run, replaceable while the transform runs (hot swap).
    pub component: Arc<crate::transforms::wasm::swap::SharedComponent>,
    /// The generation `worker` runs.
    pub generation: u64,
    /// Metadata to attribute with; `None` leaves every flow unattributed.
    pub table: Option<Arc<SharedTable>>,
    /// The options a config reload may change, read before every batch.
    pub options: Arc<ArcSwap<LiveOptions>>,
    /// Where enriched JSON goes.
    pub output: Output,
    /// Where rejected lines go.
    pub dead_letters: Output,
    /// This transform's counters.
    pub metrics: Arc<ComponentMetrics>,
    /// Dead letters still to be logged when no sink takes them.
    pub unlogged_dead_letters: u64,
    /// Whole-batch mode (a `druid` sink is downstream): a checkpointed batch with held
    /// lines goes out whole once they are released, in its stream's order, so that no
    /// publication holds part of a batch (see docs/delivery.md).
    pub whole_batches: bool,
    /// Outputs waiting in whole-batch mode.
    pub waiting: Waiting,
    /// What the consumers read of the records: JSON only when some consumer needs it.
    pub needs: crate::config::OutputNeeds,
    /// The columns asked of the component: what the consumers read that it parses.
    pub columns: Arc<[String]>,
}

/// The columns to ask of `component`: those of `needs` that it parses, or none at all
/// when it lacks one that is not an owner's attribute (`src_*`, `dst_*`, which the host
/// holds): then its consumers read its JSON instead, whose members the columns might
/// not match.
pub fn columns_for(
    needs: &crate::config::OutputNeeds,
    component: &crate::runtime::LoadedComponent,
) -> Arc<[String]> {
    let offered = |c: &String| component.info.fields.contains(c);
    let attribute = |c: &String| c.starts_with("src_") || c.starts_with("dst_");
    if needs.columns.iter().any(|c| !offered(c) && !attribute(c)) {
        return Arc::from([]);
    }
    needs
        .columns
        .iter()
        .filter(|c| offered(c))
        .cloned()
        .collect()
}

/// Whether a batch is to be rendered as JSON: when a consumer reads JSON, when lines
/// may be held (a batch that waits for its held lines takes them as JSON), when the
/// caller asks for it, and when consumers need records the columns cannot give.
fn renders_json(
    needs: &crate::config::OutputNeeds,
    columns: &[String],
    hold: bool,
    asked: bool,
) -> bool {
    asked || hold || needs.json || (columns.is_empty() && !needs.columns.is_empty())
}

/// The transform options that a config reload may change while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveOptions {
    /// Configured format (`None` = AWS default).
    pub format: Option<String>,
    /// How long a flow with an unattributed side may wait for the table to change
    /// (`None`: never held).
    pub holdback: Option<std::time::Duration>,
    /// Most lines held at once (the oldest beyond it are released unattributed).
    pub holdback_max_lines: usize,
    /// Most bytes of held lines at once (the oldest beyond it are released unattributed).
    pub holdback_max_bytes: usize,
    /// The worker's batch deadline and memory limit.
    pub limits: WorkerLimits,
}

/// The table of transforms without metadata: built once, not per batch.
static EMPTY_TABLE: std::sync::LazyLock<Arc<Table>> =
    std::sync::LazyLock::new(|| Arc::new(Table::default()));

/// How often held lines are checked while no input arrives.
const HOLD_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// A line held back until the table changes or its time is up.
struct HeldLine {
    line: String,
    /// The acknowledgements of the batch it came from, kept until it is emitted.
    acks: Vec<Arc<crate::sources::aws_kinesis::checkpoint::Ack>>,
    stream: Arc<str>,
    format: Option<String>,
    since: Instant,
    /// Released early, unattributed: the holdback buffer was over its bounds.
    overflow: bool,
    /// The waiting output of the batch it came from (whole-batch mode).
    output: Option<u64>,
}

/// A batch's output that waits for its held lines (whole-batch mode): it goes out, with
/// them, once none is held any more, and after every earlier batch of its stream.
struct WaitingOutput {
    id: u64,
    batch: LineBatch,
    /// Lines of the batch still held.
    outstanding: usize,
}

/// Outputs waiting, per stream, in arrival order.
#[derive(Default)]
pub struct Waiting {
    streams: HashMap<Arc<str>, std::collections::VecDeque<WaitingOutput>>,
    next: u64,
    /// Bytes of text waiting.
    bytes: usize,
}

impl Waiting {
    fn busy(&self, stream: &str) -> bool {
        self.streams.get(stream).is_some_and(|q| !q.is_empty())
    }

    /// Queues `batch` behind its stream's waiting outputs; returns its id.
    fn push(&mut self, batch: LineBatch, outstanding: usize) -> u64 {
        self.next += 1;
        self.bytes += batch.text.len();
        self.streams
            .entry(batch.stream.clone())
            .or_default()
            .push_back(WaitingOutput {
                id: self.next,
                batch,
                outstanding,
            });
        self.next
    }

    /// One held line of output `id` is resolved: emitted as `line`, or dead-lettered.
    fn resolve(&mut self, stream: &str, id: u64, line: Option<&str>) {
        let Some(waiting) = self
            .streams
            .get_mut(stream)
            .and_then(|q| q.iter_mut().find(|w| w.id == id))
        else {
            return;
        };
        if let Some(line) = line {
            // Its records are its JSON from now on: the columns lack this one.
            waiting.batch.columns = None;
            waiting.batch.text.push_str(line);
            waiting.batch.text.push('\n');
            waiting.batch.lines += 1;
            self.bytes += line.len() + 1;
        }
        waiting.outstanding = waiting.outstanding.saturating_sub(1);
    }

    /// Sends every output at the front of its stream that waits for nothing.
    fn flush(&mut self, output: &Output) {
        for queue in self.streams.values_mut() {
            while queue.front().is_some_and(|w| w.outstanding == 0) {
                let waiting = queue.pop_front().expect("a front");
                self.bytes -= waiting.batch.text.len();
                if waiting.batch.lines > 0 || waiting.batch.stream_end {
                    output.send(Arc::new(waiting.batch));
                }
            }
        }
        self.streams.retain(|_, q| !q.is_empty());
    }
}

/// A batch ready for the component.
struct Prepared {
    /// Shared with the worker that runs the batch.
    options: Arc<ProcessOptions>,
    table: Arc<Table>,
    /// The columns asked for.
    names: Arc<[String]>,
    generation: Arc<swap::Generation>,
    limits: WorkerLimits,
}

/// A batch with the workers, in arrival order.
struct InFlight {
    batch: crate::topology::output::Taken,
    prepared: Prepared,
    result: pool::Pending,
}

/// What the transform keeps between batches.
#[derive(Default)]
struct State {
    /// Format per stream, set by S3 header lines.
    formats: HashMap<Arc<str>, String>,
    held: Vec<HeldLine>,
    held_bytes: usize,
}

/// What one trip through the component produced.
struct Submitted {
    /// Indexes (in the submitted text) of lines the component held back.
    held: Vec<u32>,
    /// JSON objects emitted.
    emitted: usize,
    /// The format in effect after the batch (an S3 header may have set it), which held
    /// lines must be parsed with again.
    format: Option<String>,
    /// What goes to the output (the caller sends it), if anything.
    output: Option<LineBatch>,
    /// Indexes of lines that went to the dead-letter output.
    rejected: Vec<u32>,
}

impl WasmTransform {
    /// Processes batches until every input has closed, then releases held lines. It has
    /// no failure of its own: a batch the component cannot process (a trap, a timeout,
    /// an unusable result) goes to the dead-letter output with its reason, and a panic
    /// fails the pipeline through the lifecycle.
    pub fn run(mut self, input: &mut Input) {
        let mut state = State::default();
        let mut seen_version = self.table_version();
        let mut in_flight: std::collections::VecDeque<InFlight> = Default::default();
        // With workers, up to two batches per worker are out at once.
        let depth = self.pool.as_ref().map_or(0, |pool| 2 * pool.len());
        let mut ended = false;
        loop {
            let next = if ended {
                None
            } else if !in_flight.is_empty() {
                if in_flight.len() >= depth {
                    None
                } else {
                    match input.recv_timeout(std::time::Duration::ZERO) {
                        Ok(next) => next,
                        Err(Ended) => {
                            ended = true;
                            None
                        }
                    }
                }
            } else if state.held.is_empty() {
                let next = input.recv();
                ended = next.is_none();
                next
            } else {
                match input.recv_timeout(HOLD_TICK) {
                    Ok(next) => next,
                    Err(Ended) => {
                        ended = true;
                        None
                    }
                }
            };
            match next {
                Some(batch) => {
                    self.metrics.received(batch.lines as u64);
                    crate::failpoint::hit("wasm_transform.before_submit");
                    // A stream's first batch may set the format of the rest (an S3
                    // header): its later batches wait for its result.
                    let same_stream = |f: &InFlight| f.batch.stream == batch.stream;
                    if in_flight
                        .iter()
                        .any(|f| same_stream(f) && (f.batch.stream_start || batch.stream_start))
                    {
                        while let Some(front) = in_flight.pop_front() {
                            self.complete(front, &mut state);
                        }
                    }
                    let options = self.options.load_full();
                    let format = state
                        .formats
                        .get(&batch.stream)
                        .cloned()
                        .or_else(|| options.format.clone());
                    let hold = options.holdback.is_some();
                    if self.pool.is_some() {
                        let prepared = self.prepare(batch.shared(), format.as_deref(), hold, false);
                        let result = self
                            .pool
                            .as_ref()
                            .expect("a pool")
                            .submit(batch.shared().clone(), &prepared);
                        in_flight.push_back(InFlight {
                            batch,
                            prepared,
                            result,
                        });
                    } else {
                        let submitted = self.submit(
                            batch.shared(),
                            format.as_deref(),
                            hold,
                            false,
                            &mut state.formats,
                        );
                        self.settle(batch, submitted, &mut state);
                    }
                }
                None => match in_flight.pop_front() {
                    Some(front) => self.complete(front, &mut state),
                    None if ended => break,
                    None => {}
                },
            }
            if !state.held.is_empty() {
                let version = self.table_version();
                let changed = version != seen_version;
                seen_version = version;
                state.held = self.retry(std::mem::take(&mut state.held), changed, false);
                state.held_bytes = state.held.iter().map(|h| h.line.len()).sum();
            }
            self.waiting.flush(&self.output);
        }
        // Nothing is lost at shutdown: whatever is still held goes out unattributed.
        self.retry(state.held, false, true);
        self.waiting.flush(&self.output);
    }

    /// Takes a batch's result from the workers and goes on with it.
    fn complete(&mut self, in_flight: InFlight, state: &mut State) {
        let InFlight {
            batch,
            prepared,
            result,
        } = in_flight;
        let submitted = self.finish(batch.shared(), prepared, result.wait(), &mut state.formats);
        self.settle(batch, submitted, state);
    }

    /// Sends a processed batch's output on (or queues it behind its stream's waiting
    /// outputs), keeps its held lines, and bounds the holdback buffer.
    fn settle(
        &mut self,
        batch: crate::topology::output::Taken,
        mut submitted: Submitted,
        state: &mut State,
    ) {
        let options = self.options.load_full();
        let whole = self.whole_batches && !batch.acks.is_empty();
        let waits = whole && (!submitted.held.is_empty() || self.waiting.busy(&batch.stream));
        let output_id = match submitted.output.take() {
            Some(out) if waits => Some(self.waiting.push(out, submitted.held.len())),
            None if waits => Some(self.waiting.push(
                LineBatch {
                    columns: None,
                    permit: None,
                    text: String::new(),
                    lines: 0,
                    stream: batch.stream.clone(),
                    stream_start: batch.stream_start,
                    stream_end: batch.stream_end,
                    acks: batch.acks.clone(),
                },
                submitted.held.len(),
            )),
            Some(out) => {
                self.output.send(Arc::new(out));
                None
            }
            None => None,
        };
        if batch.stream_end {
            state.formats.remove(&batch.stream);
        }
        if !submitted.held.is_empty() {
            let lines: Vec<&str> = batch.text.lines().collect();
            let now = Instant::now();
            self.metrics
                .count("holdback_held_total", submitted.held.len() as u64);
            state.held.extend(submitted.held.iter().filter_map(|&i| {
                let line = lines.get(i as usize)?.to_string();
                state.held_bytes += line.len();
                Some(HeldLine {
                    line,
                    acks: batch.acks.clone(),
                    stream: batch.stream.clone(),
                    format: submitted.format.clone(),
                    since: now,
                    overflow: false,
                    output: output_id,
                })
            }));
        }
        // Over its bounds, the buffer lets its oldest lines go unattributed. What
        // waits for held lines (whole-batch mode) counts against the bound too,
        // and releasing the oldest lets it go.
        let mut over = 0;
        let (mut lines_left, mut bytes_left) =
            (state.held.len(), state.held_bytes + self.waiting.bytes);
        for line in &mut state.held {
            if lines_left <= options.holdback_max_lines && bytes_left <= options.holdback_max_bytes
            {
                break;
            }
            line.overflow = true;
            lines_left -= 1;
            bytes_left -= line.line.len();
            over += 1;
        }
        if over > 0 {
            self.metrics.count("holdback_overflow_total", over);
        }
        // Its output and its held lines carry its acknowledgements on.
        batch.done();
    }

    fn table_version(&self) -> u64 {
        self.table.as_ref().map_or(0, |t| t.version())
    }

    /// Submits held lines again: those whose time is up (all of them when `release_all`)
    /// without holding, the others with holding when the table `changed`. Returns the
    /// lines still held.
    fn retry(&mut self, held: Vec<HeldLine>, changed: bool, release_all: bool) -> Vec<HeldLine> {
        let window = self.options.load().holdback.unwrap_or_default();
        let now = Instant::now();
        let (due, waiting): (Vec<HeldLine>, Vec<HeldLine>) = held
            .into_iter()
            .partition(|h| release_all || h.overflow || now.duration_since(h.since) >= window);
        let mut still = Vec::new();
        for (lines, hold) in [(due, false), (waiting, true)] {
            if lines.is_empty() {
                continue;
            }
            if hold && !changed {
                still.extend(lines);
                continue;
            }
            // One submission per stream and format, in arrival order.
            let mut groups: Vec<(Arc<str>, Option<String>, Vec<HeldLine>)> = Vec::new();
            for line in lines {
                match groups
                    .iter_mut()
                    .find(|(s, f, _)| *s == line.stream && *f == line.format)
                {
                    Some(group) => group.2.push(line),
                    None => groups.push((line.stream.clone(), line.format.clone(), vec![line])),
                }
            }
            for (stream, format, group) in groups {
                let mut text = String::new();
                let mut acks = Vec::new();
                for line in &group {
                    text.push_str(&line.line);
                    text.push('\n');
                    for ack in &line.acks {
                        if !acks.iter().any(|a| Arc::ptr_eq(a, ack)) {
                            acks.push(ack.clone());
                        }
                    }
                }
                let batch = Arc::new(LineBatch {
                    columns: None,
                    permit: None,
                    text,
                    lines: group.len(),
                    stream,
                    stream_start: false,
                    stream_end: false,
                    acks,
                });
                // Released lines go on as JSON: they join their batches' JSON.
                let mut submitted =
                    self.submit(&batch, format.as_deref(), hold, true, &mut HashMap::new());
                self.metrics
                    .count("holdback_released_total", submitted.emitted as u64);
                self.route_released(&group, &mut submitted);
                let mut group: Vec<Option<HeldLine>> = group.into_iter().map(Some).collect();
                still.extend(
                    submitted
                        .held
                        .iter()
                        .filter_map(|&i| group.get_mut(i as usize).and_then(Option::take)),
                );
            }
        }
        still
    }

    /// Sends on what a submission of held lines `group` emitted: in whole-batch mode,
    /// each line goes to the waiting output of the batch it came from (output lines are
    /// the group's lines in order, less those held again or dead-lettered).
    fn route_released(&mut self, group: &[HeldLine], submitted: &mut Submitted) {
        if group.iter().all(|line| line.output.is_none()) {
            if let Some(out) = submitted.output.take() {
                self.output.send(Arc::new(out));
            }
            return;
        }
        let held_again: std::collections::HashSet<u32> = submitted.held.iter().copied().collect();
        let rejected: std::collections::HashSet<u32> = submitted.rejected.iter().copied().collect();
        let out = submitted.output.take();
        let emitted: Vec<&str> = out
            .as_ref()
            .map_or(Vec::new(), |o| o.text.lines().collect());
        let outputs = (0..group.len() as u32)
            .filter(|i| !held_again.contains(i) && !rejected.contains(i))
            .count();
        if emitted.len() != outputs {
            // Not one output line per line: send it as it is (at least once).
            self.metrics.error("holdback_output_unsplittable", 1);
            for (i, line) in group.iter().enumerate() {
                if let Some(id) = line.output
                    && !held_again.contains(&(i as u32))
                {
                    self.waiting.resolve(&line.stream, id, None);
                }
            }
            if let Some(out) = out {
                self.output.send(Arc::new(out));
            }
            return;
        }
        let mut emitted = emitted.into_iter();
        let mut direct = String::new();
        let mut direct_lines = 0;
        for (i, line) in group.iter().enumerate() {
            let i = i as u32;
            if held_again.contains(&i) {
                continue;
            }
            let text = (!rejected.contains(&i)).then(|| emitted.next()).flatten();
            match line.output {
                Some(id) => self.waiting.resolve(&line.stream, id, text),
                None => {
                    if let Some(text) = text {
                        direct.push_str(text);
                        direct.push('\n');
                        direct_lines += 1;
                    }
                }
            }
        }
        if direct_lines > 0
            && let Some(out) = &out
        {
            self.output.send(Arc::new(LineBatch {
                columns: None,
                permit: None,
                text: direct,
                lines: direct_lines,
                stream: out.stream.clone(),
                stream_start: false,
                stream_end: false,
                acks: out.acks.clone(),
            }));
        }
    }

    /// Runs one batch through the component against the current table, on this
    /// thread's instance, and sends its dead letters on; its output is the caller's to
    /// send.
    fn submit(
        &mut self,
        batch: &SharedBatch,
        format: Option<&str>,
        hold: bool,
        json: bool,
        formats: &mut HashMap<Arc<str>, String>,
    ) -> Submitted {
        let prepared = self.prepare(batch, format, hold, json);
        let result = self
            .worker
            .process_with(&batch.text, &prepared.options, &prepared.table);
        self.finish(batch, prepared, result, formats)
    }

    /// What a batch is to be processed with: the current component generation and
    /// limits (picked up here, between batches), the table snapshot, and the options
    /// (JSON as [`renders_json`] says, columns when a consumer reads them).
    fn prepare(
        &mut self,
        batch: &SharedBatch,
        format: Option<&str>,
        hold: bool,
        json: bool,
    ) -> Prepared {
        let limits = self.options.load().limits.clone();
        self.worker.set_limits(&limits);
        let generation = self.component.current();
        if generation.number != self.generation {
            self.worker.set_component(&generation.component);
            self.columns = columns_for(&self.needs, &generation.component);
            self.generation = generation.number;
            tracing::info!(message = "Transform runs a new component generation.", component_id = %self.id, generation = generation.number, version = %generation.component.info.version);
        }
        let table = self
            .table
            .as_ref()
            .map_or_else(|| EMPTY_TABLE.clone(), |t| t.snapshot());
        Prepared {
            options: Arc::new(ProcessOptions {
                format: format.map(str::to_string),
                stream_start: batch.stream_start,
                hold_unattributed: hold,
                json: renders_json(&self.needs, &self.columns, hold, json),
                columns: self.columns.to_vec(),
            }),
            table,
            names: self.columns.clone(),
            generation,
            limits,
        }
    }

    /// Turns a batch's result into what goes on: metrics, dead letters, the output.
    fn finish(
        &mut self,
        batch: &SharedBatch,
        prepared: Prepared,
        result: Result<crate::runtime::Processed, CallError>,
        formats: &mut HashMap<Arc<str>, String>,
    ) -> Submitted {
        let Prepared {
            options,
            table,
            names,
            ..
        } = prepared;
        let format = options.format.as_deref();
        let mut held = Vec::new();
        let mut format_after = format.map(str::to_string);
        // Every line, unless the result says which (set below).
        let mut rejected_lines: Vec<u32> = (0..batch.lines as u32).collect();
        let mut columns = None;
        let (output, rejected) = match result {
            Ok(result) => {
                columns = result.columns.map(|raw| {
                    Arc::new(Columns {
                        names,
                        raw,
                        input: batch.clone(),
                        table: table.clone(),
                    })
                });
                format_after = Some(result.format.clone());
                if !batch.stream_end {
                    formats.insert(batch.stream.clone(), result.format);
                }
                self.metrics
                    .count("attributed_sides_total", u64::from(result.attributed));
                self.metrics
                    .count("unattributed_sides_total", u64::from(result.unattributed));
                let local = result.local_sides;
                if local != Default::default() {
                    self.metrics.count(
                        "interface_attributed_sides_total",
                        u64::from(local.by_interface),
                    );
                    self.metrics.count(
                        "interface_disagreements_total",
                        u64::from(local.disagreements),
                    );
                    self.metrics
                        .count("record_attributed_sides_total", u64::from(local.by_record));
                    if local.record_owners_full > 0 {
                        self.metrics
                            .error("record_owners_full", u64::from(local.record_owners_full));
                    }
                }
                held = result.held;
                let lines: Vec<&str> = if result.errors.is_empty() {
                    Vec::new()
                } else {
                    batch.text.lines().collect()
                };
                rejected_lines = result.errors.iter().map(|e| e.line).collect();
                let rejected: Vec<(String, &str)> = result
                    .errors
                    .into_iter()
                    .map(|e| {
                        (
                            e.message,
                            lines.get(e.line as usize).copied().unwrap_or_default(),
                        )
                    })
                    .collect();
                self.metrics.error("invalid_line", rejected.len() as u64);
                ((result.output, result.emitted as usize), rejected)
            }
            Err(CallError::InvalidFormat(message)) => {
                self.metrics.error("invalid_format", batch.lines as u64);
                // An S3 header naming a field nobody documents: none of its stream can be
                // read safely. The header stays the stream's format, so every later
                // batch of the stream is refused too.
                if batch.stream_start
                    && !batch.stream_end
                    && let Some(header) = batch.text.lines().next()
                {
                    formats.insert(batch.stream.clone(), header.trim().to_string());
                }
                let reason = format!("invalid format: {message}");
                (
                    (String::new(), 0),
                    batch.text.lines().map(|l| (reason.clone(), l)).collect(),
                )
            }
            Err(CallError::Runtime(error)) => {
                self.metrics.error(error.error_type(), batch.lines as u64);
                let reason = match &error {
                    RuntimeError::InvalidResult(_) => {
                        format!("component returned an unusable result for this batch: {error}")
                    }
                    _ => format!("component failed on this batch twice: {error}"),
                };
                tracing::error!(message = "Dead-lettering a batch the component could not process.", component_id = %self.id, %error, lines = batch.lines);
                (
                    (String::new(), 0),
                    batch.text.lines().map(|l| (reason.clone(), l)).collect(),
                )
            }
        };
        let (text, emitted) = output;
        self.metrics.sent(emitted as u64);
        let output = (emitted > 0 || batch.stream_end).then(|| LineBatch {
            columns: columns.filter(|_| emitted > 0),
            // What the batch became still counts against its source's budget.
            permit: batch.permit.clone(),
            text,
            lines: emitted,
            stream: batch.stream.clone(),
            stream_start: batch.stream_start,
            stream_end: batch.stream_end,
            acks: batch.acks.clone(),
        });
        self.dead_letter(&batch.stream, &batch.acks, &rejected);
        Submitted {
            held,
            emitted,
            format: format_after,
            output,
            rejected: rejected_lines,
        }
    }

    fn dead_letter(
        &mut self,
        stream: &Arc<str>,
        acks: &[Arc<crate::sources::aws_kinesis::checkpoint::Ack>],
        rejected: &[(String, &str)],
    ) {
        if rejected.is_empty() {
            return;
        }
        if self.dead_letters.is_unconnected() {
            self.metrics.discarded(rejected.len() as u64);
            for (error, line) in rejected.iter().take(self.unlogged_dead_letters as usize) {
                tracing::warn!(message = "Rejected line (no sink takes this transform's dead_letter output).", component_id = %self.id, stream = %stream, %error, line);
            }
            self.unlogged_dead_letters = self
                .unlogged_dead_letters
                .saturating_sub(rejected.len() as u64);
        } else {
            let mut text = String::new();
            for (error, line) in rejected {
                let record = serde_json::json!({
                    "error": error,
                    "line": line.trim_end_matches('\r'),
                    "component": self.id,
                    "stream": &**stream,
                });
                text.push_str(&record.to_string());
                text.push('\n');
            }
            self.dead_letters.send(Arc::new(LineBatch {
                columns: None,
                permit: None,
                text,
                lines: rejected.len(),
                stream: stream.clone(),
                stream_start: false,
                stream_end: false,
                acks: acks.to_vec(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputNeeds;

    #[test]
    fn columns_only_when_the_component_gives_every_field_asked_for() {
        let runtime = crate::runtime::Runtime::new(Default::default()).unwrap();
        let mut component = runtime.load(crate::embedded::COMPONENT).unwrap();
        let needs = OutputNeeds {
            json: false,
            columns: ["src_app", "protocol", "start", "dst_team"]
                .map(String::from)
                .to_vec(),
        };
        // Attributes are the host's; fields the component's.
        assert_eq!(&*columns_for(&needs, &component), ["protocol", "start"]);
        assert!(!renders_json(
            &needs,
            &columns_for(&needs, &component),
            false,
            false
        ));
        // A field it does not parse: JSON, no columns.
        let mut unknown = needs.clone();
        unknown.columns.push("app_tier".into());
        assert!(columns_for(&unknown, &component).is_empty());
        assert!(renders_json(&unknown, &[], false, false));
        // A component that offers no columns at all (one built without them): JSON.
        component.info.fields.clear();
        let none = columns_for(&needs, &component);
        assert!(none.is_empty());
        assert!(renders_json(&needs, &none, false, false));
        // Holding, or a consumer of JSON, renders it whatever the columns.
        assert!(renders_json(&needs, &["start".to_string()], true, false));
        let json = OutputNeeds {
            json: true,
            ..needs.clone()
        };
        assert!(renders_json(&json, &["start".to_string()], false, false));
        // Nobody downstream: nothing asked, nothing rendered.
        assert!(!renders_json(&OutputNeeds::default(), &[], false, false));
    }
}
