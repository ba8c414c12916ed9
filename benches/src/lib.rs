//! Fixtures shared by the criterion benches: realistic materializations, stats and
//! templates, built outside the timed closures.

use std::path::{Path, PathBuf};
use std::time::Duration;
use triggers::{Clock, Materialization};
use triggers_proto::BindingStats;

/// A materialization with `bindings` bindings over distinct collections.
pub fn materialization(bindings: usize) -> Materialization {
    Materialization {
        name: "acmeCo/analytics/materialize-snowflake".to_string(),
        connector_image: "ghcr.io/estuary/materialize-snowflake:v3".to_string(),
        binding_collections: (0..bindings)
            .map(|i| format!("acmeCo/analytics/collection-{i:03}"))
            .collect(),
    }
}

/// Stats of a transaction in which every binding read documents.
pub fn stats(bindings: usize) -> Vec<BindingStats> {
    (0..bindings as u32)
        .map(|binding| BindingStats {
            binding,
            docs: 100,
            bytes: 25_600,
            first_clock: Clock::from_unix(1_700_000_000 + u64::from(binding), 0).0,
            last_clock: Clock::from_unix(1_700_000_100 + u64::from(binding), 500).0,
        })
        .collect()
}

/// A payload template of typical size, using every variable.
pub const TEMPLATE: &str = r#"{
  "dag_run_id": "flow-{{flow_run_id}}",
  "conf": {
    "materialization": "{{materialization_name}}",
    "image": "{{connector_image}}",
    "collections": {{json collection_names}},
    "from": "{{flow_published_at_min}}",
    "to": "{{flow_published_at_max}}"
  }
}"#;

/// A realistic consumer checkpoint: 8 journals, each with 4 producers, and ack intents;
/// about 1.5 KB encoded.
pub fn checkpoint(offset: i64) -> triggers_proto::Checkpoint {
    use triggers_proto::{ProducerEntry, Source};
    let sources = (0..8)
        .map(|j| {
            let producers = (0..4u8)
                .map(|p| ProducerEntry {
                    id: vec![0x0b, j as u8, p, 0x10, 0x20, 0x30],
                    last_ack: Clock::from_unix(1_700_000_000 + offset as u64, 0).0 + u64::from(p),
                    begin: -1,
                })
                .collect();
            (
                format!("acmeCo/analytics/collection-{j:03}/pivot=00000000-{j:08x}"),
                Source {
                    read_through: offset * 1024 + j,
                    producers,
                },
            )
        })
        .collect();
    let ack_intents = (0..2)
        .map(|j| (format!("acmeCo/acks/journal-{j}"), vec![0xa5; 96]))
        .collect();
    triggers_proto::Checkpoint {
        sources,
        ack_intents,
    }
}

/// The trigger params a 10-binding transaction persists.
pub fn params() -> triggers_proto::TriggerParams {
    triggers::Variables::from_stats(
        &materialization(10),
        &stats(10),
        "6f1c2d7e-0000-4000-8000-000000000001".into(),
    )
    .expect("valid stats")
    .expect("has documents")
    .to_params()
}

/// A trigger config of `count` triggers posting [`TEMPLATE`] to `url` (draining as
/// decoupled delivery's default does: coalesced).
pub fn triggers(url: &str, count: usize) -> triggers::Triggers {
    triggers_draining(url, count, None)
}

/// As [`triggers()`], but ordered: one webhook per transaction, however fast the
/// transactions come. A coalesced trigger merges the transactions committed while it
/// sends, so the webhooks per commit depend on the commit rate (one shard committing
/// flat out made 0.27 a commit; a hundred in turn, 2.79).
pub fn ordered_triggers(url: &str, count: usize) -> triggers::Triggers {
    triggers_draining(url, count, Some("ordered"))
}

/// `count` triggers posting [`TEMPLATE`] to `url`, draining in `mode` (the default when
/// none).
fn triggers_draining(url: &str, count: usize, mode: Option<&str>) -> triggers::Triggers {
    let trigger = |_| match mode {
        Some(mode) => serde_json::json!({
            "url": url, "payloadTemplate": TEMPLATE, "maxRetries": 0, "drain": {"mode": mode}
        }),
        None => serde_json::json!({"url": url, "payloadTemplate": TEMPLATE, "maxRetries": 0}),
    };
    let config = serde_json::json!({"config": (0..count).map(trigger).collect::<Vec<_>>()});
    triggers::validate(&config.to_string(), triggers::ConfigFormat::Json).expect("valid config")
}

/// How many bindings the shard benches' materialization has (and their stats cover).
pub const SHARD_BINDINGS: usize = 10;

/// One trigger posting [`TEMPLATE`] to `url` and draining as `drain`; no trigger at all
/// without a drain (the no-trigger baseline).
pub fn drained_triggers(url: &str, drain: Option<serde_json::Value>) -> triggers::Triggers {
    let config = match drain {
        None => serde_json::json!({"config": []}),
        Some(drain) => serde_json::json!({"config": [{
            "url": url, "payloadTemplate": TEMPLATE, "drain": drain,
        }]}),
    };
    triggers::validate(&config.to_string(), triggers::ConfigFormat::Json).expect("valid config")
}

/// The config of a bench's shard: [`SHARD_BINDINGS`] bindings, `triggers` delivering to
/// loopback, default backoff and ledger retention.
pub fn shard_config(
    triggers: triggers::Triggers,
    durability: triggers_runtime::Durability,
    delivery: triggers_runtime::DeliveryMode,
) -> triggers_runtime::ShardConfig {
    triggers_runtime::ShardConfig::new(
        materialization(SHARD_BINDINGS),
        std::sync::Arc::new(triggers),
    )
    .with_durability(durability)
    .with_network(triggers::NetworkPolicy::ALLOW_LOOPBACK)
    .with_delivery(delivery)
}

/// A minimal `{{json value}}` helper for the bare-Handlebars floors: the same output as
/// ours, without its strictness checks.
pub fn json_helper(
    h: &handlebars::Helper,
    _: &handlebars::Handlebars,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let value = h.param(0).map(|p| p.value().clone()).unwrap_or_default();
    out.write(&value.to_string())?;
    Ok(())
}

/// Where criterion writes its results, and where the report looks for them: the first
/// directory is where criterion writes (see [`criterion_dirs_in`]), the rest hold results
/// of older runs.
pub fn criterion_dirs() -> &'static [PathBuf] {
    static DIRS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    DIRS.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."));
        criterion_dirs_in(
            std::env::var_os("CRITERION_HOME").map(PathBuf::from),
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from),
            || cargo_target_dir(workspace),
            workspace,
        )
    })
}

/// Where criterion writes its results (the first of [`criterion_dirs`]).
pub fn criterion_dir() -> PathBuf {
    criterion_dirs()
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The directories criterion's results may be in, the one it writes to first, from
/// `$CRITERION_HOME`, `$CARGO_TARGET_DIR`, the target directory `cargo metadata` names
/// (`cargo_target`, asked only when neither is set) and the workspace root. Criterion
/// picks in that order; without either variable it asks cargo, so it writes to the
/// workspace's target directory although `cargo bench` runs it in `benches/`. Paired
/// results used to be written relative to that working directory, in
/// `benches/target/criterion`, which is looked in after.
pub fn criterion_dirs_in(
    criterion_home: Option<PathBuf>,
    cargo_target_dir: Option<PathBuf>,
    cargo_target: impl FnOnce() -> Option<PathBuf>,
    workspace: &Path,
) -> Vec<PathBuf> {
    if let Some(home) = criterion_home {
        return vec![home];
    }
    if let Some(target) = cargo_target_dir {
        return vec![target.join("criterion")];
    }
    let target = cargo_target().unwrap_or_else(|| workspace.join("target"));
    let older = workspace.join("benches/target/criterion");
    let mut dirs = vec![target.join("criterion")];
    if dirs[0] != older {
        dirs.push(older);
    }
    dirs
}

/// The workspace's target directory as cargo resolves it (config files included), when
/// run under cargo (`$CARGO` set), as criterion asks for it.
fn cargo_target_dir(workspace: &Path) -> Option<PathBuf> {
    let output = std::process::Command::new(std::env::var_os("CARGO")?)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    json["target_directory"].as_str().map(PathBuf::from)
}

/// The first of `dirs` in which `find` finds something, with what it found.
pub fn find_in<T>(
    dirs: &[PathBuf],
    mut find: impl FnMut(&Path) -> Option<T>,
) -> Option<(&Path, T)> {
    dirs.iter()
        .find_map(|dir| find(dir).map(|found| (dir.as_path(), found)))
}

/// A paired measurement: blocks of our path and of its floor alternate in one run, and
/// the medians of their per-operation block times are compared. Criterion runs each case
/// separately, and on this shared machine the floor itself drifts between those runs
/// (loopback round trips by up to 1.3x, fdatasync by 2-4x), which a ratio of separate
/// runs cannot tell from our overhead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    /// Median time per operation of our path.
    pub ours: Duration,
    /// Median time per operation of the floor.
    pub floor: Duration,
}

impl Paired {
    /// Runs `blocks` alternating blocks of `per_block` operations, `op(true)` being ours
    /// and `op(false)` the floor, each block timed; which goes first alternates too, so
    /// neither always runs on the other's heels.
    pub fn alternate(blocks: usize, per_block: u32, mut op: impl FnMut(bool)) -> Self {
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for block in 0..blocks {
            for is_ours in [block % 2 == 0, block % 2 == 1] {
                let started = std::time::Instant::now();
                for _ in 0..per_block {
                    op(is_ours);
                }
                let per_op = started.elapsed() / per_block;
                if is_ours {
                    ours.push(per_op);
                } else {
                    floor.push(per_op);
                }
            }
        }
        Self::from_blocks(ours, floor)
    }

    /// From per-operation block times, in any order.
    pub fn from_blocks(ours: Vec<Duration>, floor: Vec<Duration>) -> Self {
        Self {
            ours: median(ours),
            floor: median(floor),
        }
    }

    /// Ours over the floor: time per operation.
    pub fn ratio(&self) -> f64 {
        self.ours.as_secs_f64() / self.floor.as_secs_f64()
    }

    /// Saves it as `paired.json` in criterion's directory for `group`, for the report.
    pub fn save(&self, group: &str) {
        self.save_in(&criterion_dir(), group);
    }

    /// Saves it as `paired.json` for `group` under `root`.
    pub fn save_in(&self, root: &Path, group: &str) {
        let dir = root.join(group);
        let json = serde_json::json!({
            "ours_ns": self.ours.as_nanos() as f64,
            "floor_ns": self.floor.as_nanos() as f64,
        });
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join("paired.json"), json.to_string());
        }
    }

    /// What [`Paired::save`] wrote for `group` under `root`, if anything.
    pub fn load(root: &Path, group: &str) -> Option<Self> {
        let text = std::fs::read_to_string(root.join(group).join("paired.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let ns = |key: &str| Some(Duration::from_nanos(json[key].as_f64()? as u64));
        Some(Self {
            ours: ns("ours_ns")?,
            floor: ns("floor_ns")?,
        })
    }
}

/// The median of `samples` (the upper one of an even count); zero when empty.
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// A field of `/proc/self/status` (`VmRSS:`, `Threads:`...), in its unit (KiB for
/// sizes); 0 when absent (not Linux).
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// File descriptors this process has open (0 when `/proc` is absent).
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: `cargo run -p benches --bin report` found no paired results unless
    /// `CARGO_TARGET_DIR` was set, because `cargo bench` runs in `benches/`: the report
    /// looks where criterion writes (the workspace's target directory, or the one the
    /// environment names) and where paired results landed before.
    #[test]
    fn report_finds_paired_results_where_cargo_bench_writes_them() {
        let workspace = Path::new("/ws");
        let no_cargo = || None;
        assert_eq!(
            criterion_dirs_in(None, None, no_cargo, workspace),
            [
                PathBuf::from("/ws/target/criterion"),
                PathBuf::from("/ws/benches/target/criterion")
            ]
        );
        assert_eq!(
            criterion_dirs_in(None, None, || Some(PathBuf::from("/t")), workspace),
            [
                PathBuf::from("/t/criterion"),
                PathBuf::from("/ws/benches/target/criterion")
            ]
        );
        assert_eq!(
            criterion_dirs_in(None, Some(PathBuf::from("/c")), no_cargo, workspace),
            [PathBuf::from("/c/criterion")]
        );
        assert_eq!(
            criterion_dirs_in(
                Some(PathBuf::from("/h")),
                Some(PathBuf::from("/c")),
                no_cargo,
                workspace
            ),
            [PathBuf::from("/h")]
        );

        // A result saved by an older run in benches/target is found; one in the
        // directory criterion writes to wins over it.
        let root = tempfile::tempdir().expect("temp dir");
        let dirs = criterion_dirs_in(None, None, no_cargo, root.path());
        let old = Paired {
            ours: Duration::from_micros(12),
            floor: Duration::from_micros(10),
        };
        old.save_in(&root.path().join("benches/target/criterion"), "g");
        let found = find_in(&dirs, |dir| Paired::load(dir, "g"));
        assert_eq!(found, Some((dirs[1].as_path(), old)));
        let new = Paired {
            ours: Duration::from_micros(11),
            ..old
        };
        new.save_in(&root.path().join("target/criterion"), "g");
        let found = find_in(&dirs, |dir| Paired::load(dir, "g"));
        assert_eq!(found, Some((dirs[0].as_path(), new)));
        assert_eq!(find_in(&dirs, |dir| Paired::load(dir, "other")), None);
    }

    /// The workspace's own dirs, asked of cargo as criterion does.
    #[test]
    fn criterion_dirs_name_the_workspace_target_dir() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace");
        let dirs = criterion_dirs_in(None, None, || cargo_target_dir(workspace), workspace);
        let expected = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace.join("target"), PathBuf::from);
        assert_eq!(dirs[0], expected.join("criterion"), "{dirs:?}");
    }
}
