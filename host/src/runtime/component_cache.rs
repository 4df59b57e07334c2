//! Compiled components kept on disk: a start loads the machine code an earlier start
//! compiled for the same component bytes and engine settings instead of compiling
//! again (Cranelift takes about 0.15 s of CPU for the built-in component; loading the
//! compiled file, a few milliseconds).
//!
//! Files are named by the SHA-256 of what makes compiled code compatible with this
//! engine (wasmtime's version and settings) and of the component's bytes, in a
//! directory only its owner may enter (a directory others may write into is not used).
//! wasmtime checks a file's version and settings
//! again when it loads it; a file it refuses, or that is not there, means compiling and
//! writing it afresh (written whole, then renamed). Any trouble with the directory only
//! costs the compile: the cache never makes a load fail.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The environment variable naming the cache's directory, or `off`.
pub const CACHE_ENV: &str = "FLOWENRICH_COMPONENT_CACHE";

/// Compiled files kept at most; past it, the least recently used go.
const KEPT: usize = 16;

/// The default directory: [`CACHE_ENV`] if set (`off`: none), else
/// `$XDG_CACHE_HOME/flowenrich/components`, else `~/.cache/flowenrich/components`.
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os(CACHE_ENV) {
        Some(value) if value == "off" => None,
        Some(value) => Some(PathBuf::from(value)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .map(|dir| dir.join("flowenrich").join("components")),
    }
}

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Loaded from the cache.
    Cached,
    /// Compiled now (and written to the cache, if there is one that takes it).
    Now,
}

/// The component of `bytes` for `engine`: from `dir`'s compiled file when there is a
/// good one, else compiled (and the file written).
pub fn load(
    engine: &Engine,
    bytes: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<(Component, Compiled)> {
    let Some(dir) = dir.filter(|dir| private(dir)) else {
        return Ok((Component::new(engine, bytes)?, Compiled::Now));
    };
    let path = dir.join(file_name(engine, bytes));
    // Read, not mapped: a file changed under a mapping would fault the process.
    let cached = std::fs::read(&path).ok().and_then(|compiled| {
        // SAFETY: the file is one this process or an earlier one wrote from wasmtime's
        // own compilation of exactly these bytes, in a directory only its owner can
        // write; wasmtime refuses a file of another version or settings.
        unsafe { Component::deserialize(engine, &compiled) }.ok()
    });
    if let Some(component) = cached {
        // Recently used: kept longest.
        let _ = std::fs::File::options()
            .append(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok((component, Compiled::Cached));
    }
    let compiled = engine.precompile_component(bytes)?;
    // SAFETY: these bytes are what this engine just compiled.
    let component = unsafe { Component::deserialize(engine, &compiled)? };
    if let Err(error) = store(dir, &path, &compiled) {
        tracing::debug!(message = "Could not keep the compiled component.", path = %path.display(), %error);
    }
    Ok((component, Compiled::Now))
}

/// Whether `dir` may hold machine code this process runs: this user's own, and nobody
/// else may write into it (or not there yet: [`store`] makes it so).
fn private(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(found) = std::fs::metadata(dir) else {
        return true;
    };
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    let own = found.uid() == unsafe { libc::geteuid() };
    let safe = found.is_dir() && own && found.mode() & 0o022 == 0;
    if !safe {
        tracing::warn!(message = "The component cache is not private to this user; compiling without it.", dir = %dir.display());
    }
    safe
}

/// The SHA-256 of what makes compiled code compatible with `engine`, then of the
/// component's bytes, in hex, as `<hex>.cwasm`.
fn file_name(engine: &Engine, bytes: &[u8]) -> String {
    /// Feeds what is hashed into the digest.
    struct Feed(Sha256);
    impl Hasher for Feed {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            unreachable!("only the digest is read")
        }
    }
    let mut feed = Feed(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut feed);
    feed.0.update(bytes);
    let hex: String = feed
        .0
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{hex}.cwasm")
}

/// Writes `compiled` to `path` whole (a file beside it, then renamed) and removes the
/// least recently used files past [`KEPT`].
fn store(dir: &Path, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let partial = dir.join(format!(
        ".{}.{:016x}.partial",
        std::process::id(),
        crate::util::random_u64()
    ));
    std::fs::write(&partial, compiled)?;
    if let Err(error) = std::fs::rename(&partial, path) {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let used = path.metadata().ok()?.modified().ok()?;
            (path.extension()? == "cwasm").then_some((used, path))
        })
        .collect();
    if files.len() > KEPT {
        files.sort();
        for (_, old) in &files[..files.len() - KEPT] {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Runtime, RuntimeOptions};

    fn runtime(dir: Option<&Path>) -> Runtime {
        Runtime::new(RuntimeOptions {
            component_cache: dir.map(Path::to_path_buf),
            ..RuntimeOptions::default()
        })
        .unwrap()
    }

    fn cwasm_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_component_compiles_once_then_loads_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("components");
        let bytes = crate::embedded::component_bytes(None).unwrap();
        let engine = &runtime(Some(&cache)).engine;
        let (_, first) = load(engine, &bytes, Some(&cache)).unwrap();
        assert_eq!(first, Compiled::Now);
        let files = cwasm_files(&cache);
        assert_eq!(files.len(), 1, "{files:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = cache.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "only its owner enters the cache");
        let (_, second) = load(engine, &bytes, Some(&cache)).unwrap();
        assert_eq!(second, Compiled::Cached);
        // What the cache gave runs: the runtime loads it and asks it who it is.
        let loaded = runtime(Some(&cache)).load(&bytes).unwrap();
        assert_eq!(loaded.info.api_version, crate::runtime::API_VERSION);
        // A damaged file is compiled again and replaced.
        std::fs::write(&files[0], b"not a compiled component").unwrap();
        let (_, again) = load(engine, &bytes, Some(&cache)).unwrap();
        assert_eq!(again, Compiled::Now);
        assert_eq!(
            load(engine, &bytes, Some(&cache)).unwrap().1,
            Compiled::Cached
        );
        // Another engine's settings: a file of its own.
        let other = Runtime::new(RuntimeOptions {
            epoch_interruption: false,
            component_cache: Some(cache.clone()),
            ..RuntimeOptions::default()
        })
        .unwrap();
        assert_eq!(
            load(&other.engine, &bytes, Some(&cache)).unwrap().1,
            Compiled::Now
        );
        assert_eq!(cwasm_files(&cache).len(), 2);
        // Bad bytes are a compile error, and leave nothing behind.
        assert!(load(engine, b"\0asm bad", Some(&cache)).is_err());
        assert_eq!(cwasm_files(&cache).len(), 2);
    }

    #[test]
    fn a_cache_that_cannot_be_written_costs_only_the_compile() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"").unwrap();
        let bytes = crate::embedded::component_bytes(None).unwrap();
        let engine = &runtime(None).engine;
        let (_, compiled) = load(engine, &bytes, Some(&blocked.join("components"))).unwrap();
        assert_eq!(compiled, Compiled::Now);
        let (_, compiled) = load(engine, &bytes, None).unwrap();
        assert_eq!(compiled, Compiled::Now);
        // A directory others may write into is not trusted with machine code.
        use std::os::unix::fs::PermissionsExt;
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        for _ in 0..2 {
            assert_eq!(
                load(engine, &bytes, Some(&shared)).unwrap().1,
                Compiled::Now
            );
        }
        assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
    }

    #[test]
    fn past_the_limit_the_least_recently_used_files_go() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..KEPT + 3 {
            let path = dir.path().join(format!("{n:02}.cwasm"));
            std::fs::write(&path, b"x").unwrap();
            let at = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(n as u64);
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
        store(dir.path(), &dir.path().join("new.cwasm"), b"y").unwrap();
        let names: Vec<String> = cwasm_files(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), KEPT);
        assert!(names.contains(&"new.cwasm".to_string()));
        assert!(!names.contains(&"03.cwasm".to_string()), "{names:?}");
        assert!(names.contains(&"04.cwasm".to_string()), "{names:?}");
    }
}
