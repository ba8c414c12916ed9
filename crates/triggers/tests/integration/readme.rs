//! Every trigger config the README shows validates: users copy them.

/// The README's YAML blocks that are trigger configs, with the heading they follow.
pub(crate) fn readme_configs() -> Vec<(String, String)> {
    let readme = include_str!("../../../../README.md");
    let mut heading = String::new();
    let mut configs = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            heading = line.to_string();
        } else if line == "```yaml" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            // A config starts with `config:`, or with Flow's `interval:` before it.
            if block
                .first()
                .is_some_and(|first| first.starts_with("config:") || first.starts_with("interval:"))
            {
                configs.push((heading.clone(), block.join("\n")));
            }
        }
    }
    configs
}

/// `${NAME}` marks a value the reader fills in.
pub(crate) fn fill_placeholders(config: &str) -> String {
    let mut filled = String::new();
    let mut rest = config;
    while let Some(at) = rest.find("${") {
        filled.push_str(&rest[..at]);
        let end = rest[at..].find('}').map_or(rest.len(), |end| at + end + 1);
        filled.push_str("placeholder-value");
        rest = &rest[end..];
    }
    filled.push_str(rest);
    filled
}

#[test]
fn every_config_in_the_readme_validates() {
    let configs = readme_configs();
    let headings: Vec<&str> = configs.iter().map(|(h, _)| h.as_str()).collect();
    for receiver in ["Airflow 2", "Airflow 3", "dbt Cloud", "GitHub", "Slack"] {
        assert!(
            headings.iter().any(|h| h.contains(receiver)),
            "no config for {receiver} under {headings:?}"
        );
    }
    for (heading, config) in &configs {
        let config = fill_placeholders(config);
        if let Err(errors) = triggers::validate(&config, triggers::ConfigFormat::Yaml) {
            panic!("the config under {heading:?} does not validate: {errors}\n{config}");
        }
    }
}

/// The README's example under `heading` is the core of the runnable `example` between
/// its `// README: <marker>` and `// README: end` lines, byte for byte (less its
/// indentation), so it compiles and runs (CI runs the examples).
fn assert_readme_shows(heading: &str, example: &str, marker: &str) {
    let readme = include_str!("../../../../README.md");
    let section = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("the README has {heading}"))..];
    let shown = section
        .split("```rust,ignore\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section has the example");
    let start = format!("    // README: {marker}\n");
    let core = &example[example.find(&start).expect("start marker") + start.len()
        ..example.find("    // README: end\n").expect("end marker")];
    let core: String = core
        .lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        shown, core,
        "update the README's example under {heading} from the example"
    );
}

#[test]
fn the_library_example_in_the_readme_is_the_runnable_one() {
    assert_readme_shows(
        "## Using the library",
        include_str!("../../../runtime/examples/embed_shard.rs"),
        "Using the library",
    );
}

/// Issue 15: the host-owned store's example too.
#[test]
fn the_host_db_example_in_the_readme_is_the_runnable_one() {
    assert_readme_shows(
        "### A host's own RocksDB",
        include_str!("../../../runtime/examples/host_batch.rs"),
        "A host's own RocksDB",
    );
}

/// Issue 14: the crates were regrouped (triggers by stage, SOPS and the receiver as
/// crates of their own), so the README's index of where things are must name files and
/// directories that exist. Every backquoted path of the table's first column is checked:
/// from the workspace root, else (a short form such as `retry.rs` or `src/bin/demo.rs`)
/// from the directory of the path before it on its row, or from that path's crate.
#[test]
fn every_path_in_where_things_are_exists() {
    use std::path::{Path, PathBuf};
    let readme = include_str!("../../../../README.md");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let table = &readme[readme
        .find("## Where things are")
        .expect("the README has the index")..];
    let table = &table[..table[3..].find("\n## ").map_or(table.len(), |end| end + 3)];
    let mut checked = 0;
    for row in table.lines().filter(|line| line.starts_with("| `")) {
        let first = row.split(" | ").next().expect("a first column");
        let (mut dir, mut krate) = (PathBuf::new(), PathBuf::new());
        for path in first.split('`').skip(1).step_by(2) {
            let found = [
                root.join(path),
                root.join(&dir).join(path),
                root.join(&krate).join(path),
            ]
            .into_iter()
            .find(|candidate| candidate.exists())
            .unwrap_or_else(|| panic!("the README names {path}, which does not exist"));
            let found = found
                .strip_prefix(&root)
                .expect("under the root")
                .to_path_buf();
            dir = if found.is_dir() {
                found.clone()
            } else {
                found.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            if krate.as_os_str().is_empty() {
                krate = found.components().take(2).collect();
            }
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "only {checked} paths found: the table's shape changed"
    );
}
