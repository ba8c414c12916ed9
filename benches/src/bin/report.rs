//! Reads criterion's results and prints one line per ratio: ours against its floor, the
//! goal, and whether it holds. Run after `cargo bench -p benches`.

use std::path::Path;

/// (group, our bench, floor bench, goal, direction, what the ratio means)
const RATIOS: &[(&str, &str, &str, f64, Goal, &str)] = &[
    (
        "start_commit_sync",
        "checkpoint_and_params",
        "checkpoint_only",
        1.05,
        Goal::AtMost,
        "StartCommit with params vs checkpoint only, synced",
    ),
    (
        "start_commit_nosync",
        "checkpoint_and_params",
        "checkpoint_only",
        1.10,
        Goal::AtMost,
        "StartCommit with params vs checkpoint only, not synced",
    ),
    (
        "start_commit_sync",
        "checkpoint_and_params",
        "file_append_fdatasync",
        1.30,
        Goal::AtMost,
        "StartCommit vs file append + fdatasync (hardware floor)",
    ),
    (
        "variables_from_stats",
        "100",
        "10",
        10.0 * 1.25,
        Goal::AtMost,
        "variables for 100 bindings vs 10 (linear: ~10x)",
    ),
    (
        "variables_from_stats",
        "10",
        "1",
        10.0 * 1.25,
        Goal::AtMost,
        "variables for 10 bindings vs 1 (linear: at most ~10x)",
    ),
    (
        "render",
        "ours",
        "bare_handlebars",
        1.30,
        Goal::AtMost,
        "our render vs bare handlebars",
    ),
    (
        "render",
        "ours",
        "serde_json_floor",
        f64::INFINITY,
        Goal::AtMost,
        "our render vs serde_json of the variables (information)",
    ),
    (
        "deliver_one",
        "ours",
        "bare_reqwest",
        1.20,
        Goal::AtMost,
        "one webhook, whole path vs bare reqwest POST",
    ),
    (
        "deliver_one",
        "ours",
        "bare_render_and_reqwest",
        f64::INFINITY,
        Goal::AtMost,
        "one webhook vs bare handlebars render + bare POST (information)",
    ),
    (
        "deliver_sequential",
        "ours",
        "bare_reqwest",
        1.25,
        Goal::AtMost,
        "sequential deliveries: time ratio (throughput >= 0.8x)",
    ),
    (
        "fan_out_20ms",
        "sixteen_triggers",
        "one_trigger",
        1.10,
        Goal::AtMost,
        "16 triggers fanned out vs 1, 20 ms endpoint",
    ),
    (
        "throughput_50ms",
        "coalesced",
        "no_triggers",
        1.0 / 0.9,
        Goal::AtMost,
        "coalesced, 50 ms endpoint: time per transaction vs no triggers (throughput >= 0.9x)",
    ),
    (
        "throughput_50ms",
        "waiting",
        "coalesced",
        20.0,
        Goal::AtLeast,
        "waiting vs coalesced delivery, 50 ms endpoint: time per transaction (coalesced >= 20x throughput)",
    ),
    (
        "throughput_50ms",
        "waiting",
        "ordered",
        f64::INFINITY,
        Goal::AtMost,
        "waiting vs ordered at its backlog bound: time per transaction (information)",
    ),
    (
        "throughput_50ms",
        "waiting",
        "concurrent",
        f64::INFINITY,
        Goal::AtMost,
        "waiting vs concurrent (4 in flight) at its bound: time per transaction (information)",
    ),
    (
        "shards",
        "no_triggers_n100",
        "no_triggers_n1",
        f64::INFINITY,
        Goal::AtMost,
        "100 shards committed in turn vs 1, no triggers: time per commit, separate runs (the goal is paired, below)",
    ),
    (
        "shards",
        "three_triggers_n100",
        "three_triggers_n1",
        f64::INFINITY,
        Goal::AtMost,
        "100 shards vs 1, 3 triggers, their webhooks delivered: time per commit, separate runs (the goal is paired, below)",
    ),
    (
        "shards",
        "no_triggers_n10",
        "no_triggers_n1",
        f64::INFINITY,
        Goal::AtMost,
        "10 shards vs 1, no triggers: time per commit (information)",
    ),
    (
        "shards",
        "no_triggers_n500",
        "no_triggers_n1",
        f64::INFINITY,
        Goal::AtMost,
        "500 shards vs 1, no triggers: time per commit (information)",
    ),
    (
        "shards",
        "three_triggers_n500",
        "three_triggers_n1",
        f64::INFINITY,
        Goal::AtMost,
        "500 shards vs 1, 3 triggers: time per commit (information)",
    ),
    (
        "shards",
        "one_db_no_triggers_n100",
        "no_triggers_n1",
        f64::INFINITY,
        Goal::AtMost,
        "100 shards in one RocksDB, a keyspace each, vs 1 shard: time per commit (information)",
    ),
    (
        "shards",
        "one_db_no_triggers_n500",
        "no_triggers_n1",
        f64::INFINITY,
        Goal::AtMost,
        "500 shards in one RocksDB vs 1 shard: time per commit (information)",
    ),
    (
        "recovery_1e5",
        "open_and_find_pending",
        "plain_open",
        1.20,
        Goal::AtMost,
        "recovery with 1e5 transactions vs plain open",
    ),
];

/// (group, goal on ours/floor time per operation, what the ratio means)
const PAIRED: &[(&str, f64, &str)] = &[
    (
        "start_commit_sync_paired",
        1.05,
        "StartCommit with params vs checkpoint only, synced",
    ),
    (
        "start_commit_nosync_paired",
        1.10,
        "StartCommit with params vs checkpoint only, not synced",
    ),
    (
        "recovery_1e5_paired",
        1.2,
        "recovery with 1e5 transactions vs plain open",
    ),
    (
        "deliver_paired",
        1.2,
        "one webhook, our whole path vs a bare reqwest POST: time",
    ),
    (
        "deliver_paired",
        1.0 / 0.8,
        "sequential deliveries vs bare reqwest: time per delivery (throughput >= 0.8x)",
    ),
    (
        "throughput_50ms",
        1.0 / 0.9,
        "coalesced vs no triggers: time per transaction (throughput >= 0.9x)",
    ),
    (
        "token_auth_paired",
        1.02,
        "a trigger with a cached token vs a fixed Authorization header: time",
    ),
    (
        "shards_n100_paired",
        1.0 / 0.8,
        "100 shards committed in turn vs 1, no triggers: time per commit (aggregate throughput >= 0.8x)",
    ),
    (
        "shards_n100_triggers_paired",
        1.0 / 0.8,
        "100 shards vs 1, 3 triggers, their webhooks delivered: time per commit (throughput >= 0.8x)",
    ),
    (
        "shards_n100_at_once_paired",
        f64::INFINITY,
        "100 shards committing at once vs 1, no triggers: time per commit (information)",
    ),
    (
        "shards_n100_triggers_at_once_paired",
        f64::INFINITY,
        "100 shards committing at once vs 1, 3 triggers, their webhooks delivered: time per commit (information)",
    ),
    (
        "shards_n100_stores_alone_paired",
        f64::INFINITY,
        "the floor: 100 RocksDB stores written in turn vs 1, no runtime: time per write (information)",
    ),
];

#[derive(Clone, Copy)]
enum Goal {
    AtMost,
    AtLeast,
}

fn median_ns(root: &Path, group: &str, bench: &str) -> Option<f64> {
    let path = root.join(group).join(bench).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn main() {
    // Where `cargo bench` wrote, whichever directory it ran in.
    let dirs = benches::criterion_dirs();
    for dir in dirs {
        println!("criterion results in {}", dir.display());
    }
    let mut failed = 0;
    for (group, ours, floor, goal, direction, what) in RATIOS {
        let both = |root: &Path| {
            Some((
                median_ns(root, group, ours)?,
                median_ns(root, group, floor)?,
            ))
        };
        match benches::find_in(dirs, both) {
            Some((_, (a, b))) => {
                let ratio = a / b;
                let holds = match direction {
                    Goal::AtMost => ratio <= *goal,
                    Goal::AtLeast => ratio >= *goal,
                };
                failed += usize::from(!holds);
                let goal = match (goal.is_finite(), direction) {
                    (false, _) => "info".to_string(),
                    (true, Goal::AtMost) => format!("<= {goal:.2}"),
                    (true, Goal::AtLeast) => format!(">= {goal:.2}"),
                };
                println!(
                    "{:<5} {ratio:>7.3}x  goal {goal:<8} {what} ({group}: {:.1} us / {:.1} us)",
                    if holds { "ok" } else { "MISS" },
                    a / 1e3,
                    b / 1e3
                );
            }
            None => println!("--    (not measured) {what} ({group}/{ours} vs {floor})"),
        }
    }
    // Paired measurements (see `benches::Paired`): blocks of ours and its floor alternate
    // in one run, so these ratios hold on a noisy machine where the ones above may not.
    for (group, goal, what) in PAIRED {
        match benches::find_in(dirs, |root| benches::Paired::load(root, group)) {
            Some((_, paired)) => {
                let ratio = paired.ratio();
                let holds = ratio <= *goal;
                failed += usize::from(!holds);
                let goal = if goal.is_finite() {
                    format!("<= {goal:.2}")
                } else {
                    "info".to_string()
                };
                println!(
                    "{:<5} {ratio:>7.3}x  goal {goal:<8} {what}, paired blocks ({group}: {:.1} us / {:.1} us)",
                    if holds { "ok" } else { "MISS" },
                    paired.ours.as_secs_f64() * 1e6,
                    paired.floor.as_secs_f64() * 1e6,
                );
            }
            None => println!("--    (not measured) {what}, paired blocks ({group})"),
        }
    }
    failed += shard_figures(dirs);
    println!("{failed} goal(s) missed");
}

/// What each shard costs at N shards in one process (the `shards` bench's
/// `figures.json`), against issue 16's goals: at most 1 MiB of RSS and 6 file
/// descriptors per shard after warm-up, and no thread per shard (from 100 shards on, at
/// most a tenth of a thread each). Returns the goals missed.
fn shard_figures(dirs: &[std::path::PathBuf]) -> usize {
    let load = |root: &Path| {
        let text = std::fs::read_to_string(root.join("shards").join("figures.json")).ok()?;
        serde_json::from_str::<Vec<serde_json::Value>>(&text).ok()
    };
    let Some((_, figures)) = benches::find_in(dirs, load) else {
        println!("--    (not measured) resources per shard (shards/figures.json)");
        return 0;
    };
    let mut failed = 0;
    for figure in figures {
        let (case, n) = (
            figure["case"].as_str().unwrap_or("?"),
            figure["shards"].as_u64().unwrap_or(0),
        );
        let rss = figure["rss_kib_per_shard"].as_f64().unwrap_or(f64::NAN);
        let fds = figure["fds_per_shard"].as_f64().unwrap_or(f64::NAN);
        let threads = figure["threads_per_shard"].as_f64().unwrap_or(f64::NAN);
        let after = figure["rss_kib_per_shard_after_bench"]
            .as_f64()
            .unwrap_or(f64::NAN);
        // At N = 1 the figures hold what the process starts once (pool threads, the
        // shared caches): information only.
        let judged = n >= 10;
        let holds = !judged || (rss <= 1024.0 && fds <= 6.0 && (n < 100 || threads <= 0.1));
        failed += usize::from(!holds);
        println!(
            "{:<5} shards {case} N = {n}: per shard {:.2} MiB RSS after warm-up ({:.2} MiB after \
             the bench's commits), {fds:.2} fds, {threads:.3} threads; process {} threads, {} \
             fds, {} connections (goal: <= 1 MiB, <= 6 fds, no thread per shard)",
            if !judged {
                "info"
            } else if holds {
                "ok"
            } else {
                "MISS"
            },
            rss / 1024.0,
            after / 1024.0,
            figure["threads"],
            figure["fds"],
            figure["connections"],
        );
    }
    failed
}
