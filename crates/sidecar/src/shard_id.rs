//! Which shard a sidecar call is about, and where that shard's store lives.
//!
//! A Gazette consumer process is assigned many shards (the key-range splits of one
//! materialization), and they move between processes: one sidecar serves all of its
//! consumer's shards, each request naming its shard by its Gazette shard id. The empty id
//! is the default shard, whose store is the sidecar's `--store` itself (the sidecar of
//! one shard, as before ids). A named shard's store is one directory under
//! `<store>/shards/`, so the id must make one safe directory name: [`ShardId::parse`]
//! checks the bound before anything touches the disk.

use std::path::{Path, PathBuf};

/// Longest shard id, in bytes.
pub const MAX_SHARD_ID_BYTES: usize = 255;

/// Longest store directory name of a shard ([`ShardId::dir_name`]), in bytes: the longest
/// file name Linux (and most file systems) allow.
pub const MAX_SHARD_DIR_NAME_BYTES: usize = 255;

/// Directory under the sidecar's `--store` that holds the named shards' stores.
pub const SHARDS_DIR: &str = "shards";

/// The bound, as every error about it states it.
const BOUND: &str = "a shard id is 1 to 255 bytes of ASCII letters, digits and `. _ = - /`, \
     its `/`-separated segments neither empty nor `.` or `..`, and its store directory name \
     (each `/` written as `%2F`) at most 255 bytes; the empty id names the default shard";

/// A shard id that names a store directory safely: see [`ShardId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(String);

/// Why a shard id is refused. Each message states the whole bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardIdError {
    /// Longer than [`MAX_SHARD_ID_BYTES`] (not echoed).
    #[error("the shard id is {len} bytes, more than {MAX_SHARD_ID_BYTES}: {BOUND}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A byte outside the allowed set.
    #[error("the shard id {id:?} has {byte:?} at byte {at}: {BOUND}")]
    Byte {
        /// The id (at most [`MAX_SHARD_ID_BYTES`] bytes, so bounded).
        id: String,
        /// The byte, as the character it starts.
        byte: char,
        /// Its offset.
        at: usize,
    },
    /// A `/`-separated segment is empty, `.` or `..`.
    #[error("the shard id {id:?} has an empty, `.` or `..` segment: {BOUND}")]
    Segment {
        /// The id.
        id: String,
    },
    /// Its store directory name is longer than [`MAX_SHARD_DIR_NAME_BYTES`].
    #[error(
        "the shard id {id:?} makes a store directory name of {len} bytes, more than \
         {MAX_SHARD_DIR_NAME_BYTES}: {BOUND}"
    )]
    DirNameTooLong {
        /// The id.
        id: String,
        /// The directory name's length.
        len: usize,
    },
}

impl ShardId {
    /// The default shard (the empty id), whose store is `--store` itself.
    pub const DEFAULT: ShardId = ShardId(String::new());

    /// Checks `id` against the bound: empty (the default shard), or 1 to
    /// [`MAX_SHARD_ID_BYTES`] bytes of `[A-Za-z0-9._=-/]` whose `/`-separated segments
    /// are neither empty nor `.` nor `..` (so no leading, trailing or doubled `/`, and no
    /// path that climbs), and whose [`ShardId::dir_name`] is at most
    /// [`MAX_SHARD_DIR_NAME_BYTES`]. `%` is not allowed, so two ids never share a
    /// directory name. Checked in one pass over at most 255 bytes.
    pub fn parse(id: &str) -> Result<Self, ShardIdError> {
        if id.is_empty() {
            return Ok(Self::DEFAULT);
        }
        if id.len() > MAX_SHARD_ID_BYTES {
            return Err(ShardIdError::TooLong { len: id.len() });
        }
        if let Some((at, byte)) = id
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '=' | '-' | '/')))
        {
            return Err(ShardIdError::Byte {
                id: id.to_string(),
                byte,
                at,
            });
        }
        if id
            .split('/')
            .any(|segment| matches!(segment, "" | "." | ".."))
        {
            return Err(ShardIdError::Segment { id: id.to_string() });
        }
        let len = id.len() + 2 * id.bytes().filter(|b| *b == b'/').count();
        if len > MAX_SHARD_DIR_NAME_BYTES {
            return Err(ShardIdError::DirNameTooLong {
                id: id.to_string(),
                len,
            });
        }
        Ok(Self(id.to_string()))
    }

    /// The id as given; empty for the default shard.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the default shard.
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }

    /// The name of its store directory: the id with each `/` written as `%2F` (one
    /// directory, never a path); empty for the default shard.
    pub fn dir_name(&self) -> String {
        self.0.replace('/', "%2F")
    }

    /// Its store directory, for a sidecar whose `--store` is `store`: `store` itself for
    /// the default shard, else `store/shards/<dir_name>`.
    pub fn store_dir(&self, store: &Path) -> PathBuf {
        if self.is_default() {
            store.to_path_buf()
        } else {
            store.join(SHARDS_DIR).join(self.dir_name())
        }
    }
}

impl std::fmt::Display for ShardId {
    /// The id, or `the default shard` for the empty one (for messages and logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_default() {
            f.write_str("the default shard")
        } else {
            write!(f, "shard {:?}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids_of_gazette_shards_are_accepted_and_named_as_one_directory() {
        let store = Path::new("/var/lib/store");
        for (id, dir) in [
            (
                "materialize/acmeCo/orders/postgres/0011223344556677/00000000-00000000",
                "/var/lib/store/shards/materialize%2FacmeCo%2Forders%2Fpostgres%2F0011223344556677%2F00000000-00000000",
            ),
            ("a", "/var/lib/store/shards/a"),
            ("key=value_1.2-3", "/var/lib/store/shards/key=value_1.2-3"),
            (
                ".hidden/..x/...",
                "/var/lib/store/shards/.hidden%2F..x%2F...",
            ),
        ] {
            let parsed = ShardId::parse(id).expect(id);
            assert_eq!(parsed.as_str(), id);
            assert_eq!(parsed.store_dir(store), Path::new(dir), "{id}");
            assert_eq!(
                parsed.store_dir(store).parent(),
                Some(store.join(SHARDS_DIR).as_path())
            );
        }
        let default = ShardId::parse("").expect("the default shard");
        assert!(default.is_default());
        assert_eq!(default.store_dir(store), store);
    }

    /// Whatever the id, parsing answers (no panic), and an accepted one names exactly one
    /// directory right under `shards/`, never `.` or `..`, within the name limit.
    #[test]
    fn every_accepted_shard_id_names_one_directory_under_shards() {
        let alphabet = ['a', 'Z', '0', '.', '/', '=', '-', '_', '%', ' ', '\0', 'é'];
        let store = Path::new("/s");
        let mut rng = fastrand::Rng::with_seed(16);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let len = rng.usize(0..=12);
            let id: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let Ok(parsed) = ShardId::parse(&id) else {
                continue;
            };
            if parsed.is_default() {
                continue;
            }
            accepted += 1;
            let name = parsed.dir_name();
            assert!(
                !name.contains('/') && name != "." && name != ".." && name.len() <= 255,
                "{id:?} -> {name:?}"
            );
            assert_eq!(
                parsed.store_dir(store),
                Path::new("/s/shards").join(&name),
                "{id:?}"
            );
            assert_eq!(name.replace("%2F", "/"), id, "the name gives the id back");
        }
        assert!(
            accepted > 1_000,
            "the alphabet makes valid ids too: {accepted}"
        );
    }

    #[test]
    fn shard_ids_outside_the_bound_are_refused_saying_the_bound() {
        let long = "a".repeat(MAX_SHARD_ID_BYTES + 1);
        // 63 segments of `a/` and an `a` make 253 bytes once written with %2F; one more
        // segment makes 257: the id (129 bytes) is short enough, its directory name not.
        let slashes_fit = format!("{}a", "a/".repeat(63));
        assert_eq!(
            ShardId::parse(&slashes_fit).expect("fits").dir_name().len(),
            64 + 63 * 3
        );
        let slashes = format!("{}a", "a/".repeat(64));
        for (id, kind) in [
            (long.as_str(), "TooLong"),
            ("/a", "Segment"),
            ("a/", "Segment"),
            ("a//b", "Segment"),
            (".", "Segment"),
            ("..", "Segment"),
            ("a/../b", "Segment"),
            ("a/./b", "Segment"),
            ("a%2Fb", "Byte"),
            ("a b", "Byte"),
            ("a\\b", "Byte"),
            ("a\0b", "Byte"),
            ("é", "Byte"),
            ("a+b", "Byte"),
            (slashes.as_str(), "DirNameTooLong"),
        ] {
            let err = ShardId::parse(id).expect_err(id);
            let got = match &err {
                ShardIdError::TooLong { .. } => "TooLong",
                ShardIdError::Byte { .. } => "Byte",
                ShardIdError::Segment { .. } => "Segment",
                ShardIdError::DirNameTooLong { .. } => "DirNameTooLong",
            };
            assert_eq!(got, kind, "{id:?}: {err}");
            assert!(err.to_string().contains(BOUND), "{err}");
            assert!(err.to_string().len() < 1024, "bounded: {err}");
        }
    }
}
