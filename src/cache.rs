//! flakem's cache on disk: answers that cost a process (the dialect probe, the flake's names
//! for completion), kept under a key of what they depend on.

use std::path::PathBuf;

/// `$XDG_CACHE_HOME/flakem`, else `~/.cache/flakem`.
fn dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("flakem"))
}

/// What was kept under `name`, if anything.
pub fn read(name: &str) -> Option<String> {
    std::fs::read_to_string(dir()?.join(name)).ok()
}

/// Keeps `text` under `name`; a cache that cannot be written is only slower.
pub fn write(name: &str, text: &str) {
    if let Some(dir) = dir() {
        std::fs::create_dir_all(&dir).ok();
        std::fs::write(dir.join(name), text).ok();
    }
}
