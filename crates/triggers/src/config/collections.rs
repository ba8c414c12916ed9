//! A trigger's `collections` (estuary/flow#2028): the collections it fires for.
//!
//! An entry ending in `/` is a name prefix (Flow's own prefix convention: `acmeCo/orders/`
//! covers `acmeCo/orders/v1` and `acmeCo/orders/eu/v2`); any other entry is one exact
//! collection name. Without the field a trigger fires for every collection.

use crate::config::document::{MAX_COLLECTION_BYTES, MAX_COLLECTIONS};
use crate::config::validate::{TriggerLabel, ValidationError};
use crate::render::variables::Variables;
use std::borrow::Cow;

/// A trigger's checked `collections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CollectionFilter {
    /// The entries as written, in config order (what errors and the bindings check name).
    entries: Vec<String>,
    /// The exact names, sorted, for a binary search.
    exact: Vec<String>,
    /// The prefixes, `/` included.
    prefixes: Vec<String>,
}

impl CollectionFilter {
    /// Checks a trigger's `collections` against their bounds, pushing every problem to
    /// `errors`; `None` for no filter (absent) or when an entry is refused.
    pub(crate) fn check(
        label: &TriggerLabel,
        raw: Option<&[String]>,
        errors: &mut Vec<ValidationError>,
    ) -> Option<Self> {
        let raw = raw?;
        if raw.is_empty() {
            errors.push(ValidationError::EmptyCollections {
                trigger: label.clone(),
            });
            return None;
        }
        // Past the bound, no entry is checked.
        if raw.len() > MAX_COLLECTIONS {
            errors.push(ValidationError::TooManyCollections {
                trigger: label.clone(),
                count: raw.len(),
                max: MAX_COLLECTIONS,
            });
            return None;
        }
        let before = errors.len();
        let mut seen = rustc_hash::FxHashSet::default();
        for (position, entry) in raw.iter().enumerate() {
            let reason = if entry.is_empty() {
                Some("it is empty".to_string())
            } else if entry.len() > MAX_COLLECTION_BYTES {
                Some(format!(
                    "it is {} bytes, but at most {MAX_COLLECTION_BYTES} are allowed",
                    entry.len()
                ))
            } else if !seen.insert(entry.as_str()) {
                Some("listed twice".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                errors.push(ValidationError::InvalidCollection {
                    trigger: label.clone(),
                    position,
                    entry: entry.chars().take(64).collect(),
                    reason,
                });
            }
        }
        if errors.len() != before {
            return None;
        }
        let (prefixes, mut exact): (Vec<String>, Vec<String>) =
            raw.iter().cloned().partition(|entry| entry.ends_with('/'));
        exact.sort_unstable();
        Some(Self {
            entries: raw.to_vec(),
            exact,
            prefixes,
        })
    }

    /// Whether `collection` is one of the exact names or starts with one of the prefixes.
    pub(crate) fn matches(&self, collection: &str) -> bool {
        self.exact
            .binary_search_by(|name| name.as_str().cmp(collection))
            .is_ok()
            || self
                .prefixes
                .iter()
                .any(|prefix| collection.starts_with(prefix.as_str()))
    }

    /// The entries, as written.
    pub(crate) fn entries(&self) -> &[String] {
        &self.entries
    }

    /// `variables` as a trigger with this filter sees them: `collection_names` kept to
    /// those that match, in their order, everything else as is; `None` when none match.
    /// Borrowed when every collection matches, so the common case copies nothing.
    pub(crate) fn variables_for<'v>(&self, variables: &'v Variables) -> Option<Cow<'v, Variables>> {
        let names = &variables.collection_names;
        let matching = names.iter().filter(|name| self.matches(name)).count();
        if matching == 0 {
            return None;
        }
        if matching == names.len() {
            return Some(Cow::Borrowed(variables));
        }
        let collection_names = names
            .iter()
            .filter(|name| self.matches(name))
            .cloned()
            .collect();
        Some(Cow::Owned(Variables {
            collection_names,
            materialization_name: variables.materialization_name.clone(),
            connector_image: variables.connector_image.clone(),
            flow_published_at_min: variables.flow_published_at_min,
            flow_published_at_max: variables.flow_published_at_max,
            flow_run_id: variables.flow_run_id.clone(),
            run_id: variables.run_id.clone(),
            transaction_count: variables.transaction_count,
            first_commit_seq: variables.first_commit_seq,
            last_commit_seq: variables.last_commit_seq,
        }))
    }
}

/// The materialization's binding collections, for the bindings check: each once, in
/// binding order (for errors), and sorted (to find an entry's match in log time).
pub(crate) struct Bindings<'a> {
    /// Each collection once, in binding order.
    listed: Vec<&'a str>,
    sorted: Vec<&'a str>,
}

/// How many binding collections an error lists; it says how many there are in all.
pub const MAX_LISTED_BINDINGS: usize = 16;

impl<'a> Bindings<'a> {
    pub(crate) fn new(bindings: &'a [String]) -> Self {
        let mut seen = rustc_hash::FxHashSet::default();
        let listed: Vec<&str> = bindings
            .iter()
            .map(String::as_str)
            .filter(|name| seen.insert(*name))
            .collect();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        Self { listed, sorted }
    }

    /// Whether some binding's collection is `entry` (an exact name) or starts with it (a
    /// prefix ending in `/`).
    pub(crate) fn any_matches(&self, entry: &str) -> bool {
        // The first collection not below `entry`: `entry` itself, or the least name
        // starting with it, if any is there.
        let at = self.sorted.partition_point(|name| *name < entry);
        self.sorted.get(at).is_some_and(|name| {
            if entry.ends_with('/') {
                name.starts_with(entry)
            } else {
                *name == entry
            }
        })
    }

    /// The first [`MAX_LISTED_BINDINGS`] collections, and how many there are.
    pub(crate) fn shown(&self) -> (Vec<String>, usize) {
        let shown = self
            .listed
            .iter()
            .take(MAX_LISTED_BINDINGS)
            .map(|name| name.to_string())
            .collect();
        (shown, self.listed.len())
    }
}

#[cfg(test)]
mod tests {
    use crate::{ConfigFormat, Triggers, ValidationError, ValidationErrors, Variables, validate};
    use std::borrow::Cow;

    /// One trigger with `collections` (a JSON value, or nothing).
    fn with_collections(
        collections: Option<serde_json::Value>,
    ) -> Result<Triggers, ValidationErrors> {
        let mut trigger =
            serde_json::json!({"url": "https://x.example.com", "payloadTemplate": "{}"});
        if let Some(collections) = collections {
            trigger["collections"] = collections;
        }
        validate(
            &serde_json::json!({"config": [trigger]}).to_string(),
            ConfigFormat::Json,
        )
    }

    fn filtered(collections: serde_json::Value) -> Triggers {
        with_collections(Some(collections)).expect("valid")
    }

    fn variables(names: &[&str]) -> Variables {
        Variables {
            collection_names: names.iter().map(ToString::to_string).collect(),
            ..Variables::placeholder()
        }
    }

    /// Issue 18, item 5: exact names match only themselves, prefixes (ending in `/`)
    /// every name under them; no `collections` fires for everything.
    #[test]
    fn collections_match_exact_names_and_slash_prefixes() {
        let triggers = filtered(serde_json::json!([
            "acmeCo/orders/",
            "acmeCo/users",
            "other/x"
        ]));
        let trigger = triggers.iter().next().expect("one trigger");
        for (collection, fires) in [
            ("acmeCo/orders/v1", true),
            ("acmeCo/orders/eu/v2", true),
            ("acmeCo/orders/", true),
            ("acmeCo/orders", false),
            ("acmeCo/ordersv1", false),
            ("acmeCo/users", true),
            ("acmeCo/users/v2", false),
            ("acmeCo/user", false),
            ("other/x", true),
            ("other/xy", false),
            ("", false),
        ] {
            assert_eq!(trigger.fires_for(collection), fires, "{collection}");
        }
        let all = with_collections(None).expect("valid");
        let all = all.iter().next().expect("one trigger");
        assert!(all.fires_for("anything") && all.fires_for(""));
        assert_eq!(all.collections(), None);
    }

    /// Issue 18, item 5: a trigger sees only the matching collections, in their order,
    /// and everything else of the transaction as is; none matching is `None`; no filter,
    /// or every collection matching, borrows.
    #[test]
    fn variables_for_keeps_matching_collections_in_order_or_none() {
        let triggers = filtered(serde_json::json!(["b/", "d"]));
        let trigger = triggers.iter().next().expect("one trigger");
        let all = variables(&["a", "b/2", "c", "d", "b/1"]);
        let seen = trigger.variables_for(&all).expect("fires");
        assert!(matches!(seen, Cow::Owned(_)));
        assert_eq!(seen.collection_names, ["b/2", "d", "b/1"]);
        assert_eq!(
            *seen,
            Variables {
                collection_names: seen.collection_names.clone(),
                ..all.clone()
            }
        );
        assert_eq!(trigger.variables_for(&variables(&["a", "c", "bb"])), None);
        assert_eq!(trigger.variables_for(&variables(&[])), None);
        let matching = variables(&["d", "b/x"]);
        assert!(
            matches!(trigger.variables_for(&matching), Some(Cow::Borrowed(v)) if std::ptr::eq(v, &matching))
        );
        let unfiltered = with_collections(None).expect("valid");
        let unfiltered = unfiltered.iter().next().expect("one trigger");
        let empty = variables(&[]);
        assert!(
            matches!(unfiltered.variables_for(&empty), Some(Cow::Borrowed(v)) if std::ptr::eq(v, &empty))
        );
    }

    /// Issue 18, item 5: a coalesced trigger merges what it saw of each transaction: the
    /// union of its matching collections in commit order, the transactions' whole spans.
    #[test]
    fn filtered_variables_merge_as_a_coalesced_trigger_sends_them() {
        let triggers = filtered(serde_json::json!(["orders/"]));
        let trigger = triggers.iter().next().expect("one trigger");
        let mut first = variables(&["users", "orders/b"]);
        first.flow_published_at_min = time::macros::datetime!(2024-01-01 00:00:00 UTC);
        first.flow_published_at_max = time::macros::datetime!(2024-01-01 00:01:00 UTC);
        first.first_commit_seq = 1;
        first.last_commit_seq = 1;
        first.transaction_count = 1;
        let mut second = variables(&["orders/a", "users", "orders/b"]);
        second.flow_published_at_min = time::macros::datetime!(2024-01-01 00:02:00 UTC);
        second.flow_published_at_max = time::macros::datetime!(2024-01-01 00:03:00 UTC);
        second.first_commit_seq = 2;
        second.last_commit_seq = 2;
        second.transaction_count = 1;
        second.flow_run_id = "second".to_string();
        let only_users = variables(&["users"]);
        assert_eq!(trigger.variables_for(&only_users), None);

        let mut merged = trigger.variables_for(&first).expect("fires").into_owned();
        merged.merge(&trigger.variables_for(&second).expect("fires"));
        assert_eq!(merged.collection_names, ["orders/b", "orders/a"]);
        assert_eq!(merged.flow_published_at_min, first.flow_published_at_min);
        assert_eq!(merged.flow_published_at_max, second.flow_published_at_max);
        assert_eq!((merged.first_commit_seq, merged.last_commit_seq), (1, 2));
        assert_eq!(merged.transaction_count, 2);
        assert_eq!(merged.flow_run_id, "second");
    }

    /// Issue 18, item 5: every bound of `collections`, each error naming the field, the
    /// entry's place and the trigger.
    #[test]
    fn collections_bounds_are_checked_naming_trigger_and_entry() {
        let error = |collections: serde_json::Value| -> Vec<String> {
            match with_collections(Some(collections)) {
                Ok(_) => panic!("validated"),
                Err(ValidationErrors(errors)) => {
                    assert!(errors.iter().all(|e| e.trigger_index() == Some(0)));
                    errors.iter().map(ToString::to_string).collect()
                }
            }
        };
        let t = "trigger 0 (https://x.example.com)";
        assert_eq!(
            error(serde_json::json!([])),
            [format!(
                "{t}: `collections` is empty, so the trigger could never fire; leave it out to fire for every collection"
            )]
        );
        let long = "c".repeat(crate::MAX_COLLECTION_BYTES + 1);
        assert_eq!(
            error(serde_json::json!(["a", "", "b/", long, "a", "b/"])),
            [
                format!("{t}: `collections[1]` (\"\") is not allowed: it is empty"),
                format!(
                    "{t}: `collections[3]` ({:?}) is not allowed: it is 513 bytes, but at most 512 are allowed",
                    "c".repeat(64)
                ),
                format!("{t}: `collections[4]` (\"a\") is not allowed: listed twice"),
                format!("{t}: `collections[5]` (\"b/\") is not allowed: listed twice"),
            ]
        );
        let many: Vec<String> = (0..=crate::MAX_COLLECTIONS)
            .map(|i| format!("c{i}"))
            .collect();
        assert_eq!(
            error(serde_json::json!(many)),
            [format!(
                "{t}: `collections` has 257 entries, but at most 256 are allowed"
            )]
        );
        // A shape error, from the parser.
        assert!(matches!(
            with_collections(Some(serde_json::json!("acmeCo/orders"))),
            Err(ValidationErrors(errors)) if matches!(errors[..], [ValidationError::Parse(_)])
        ));
        // At the bounds; `null` is no filter, as for Flow's other optional fields.
        let at_bounds: Vec<String> = (0..crate::MAX_COLLECTIONS - 1)
            .map(|i| format!("c{i}"))
            .chain(["d".repeat(crate::MAX_COLLECTION_BYTES)])
            .collect();
        let triggers = filtered(serde_json::json!(at_bounds));
        assert_eq!(
            triggers
                .iter()
                .next()
                .and_then(|t| t.collections())
                .map(<[String]>::len),
            Some(256)
        );
        let null = filtered(serde_json::Value::Null);
        assert_eq!(null.iter().next().and_then(|t| t.collections()), None);
    }

    /// Issue 18, item 5: the bindings check reports every entry that matches no binding
    /// collection, of every trigger, listing at most 16 bindings and how many there are.
    #[test]
    fn validate_collections_reports_every_entry_matching_no_binding() {
        let config = r#"{"config": [
            {"name": "a", "url": "https://a.example.com", "payloadTemplate": "{}", "collections": ["acmeCo/orders/", "acmeCo/gone", "acmeCo/users"]},
            {"name": "b", "url": "https://b.example.com", "payloadTemplate": "{}"},
            {"name": "c", "url": "https://c.example.com", "payloadTemplate": "{}", "collections": ["acmeCo/orders", "zzz/"]}
        ]}"#;
        let triggers = validate(config, ConfigFormat::Json).expect("valid");
        let bindings: Vec<String> = ["acmeCo/users", "acmeCo/orders/v1", "acmeCo/users"]
            .map(String::from)
            .to_vec();
        let ValidationErrors(errors) =
            crate::validate_collections(&triggers, &bindings).expect_err("unmatched");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let known = "acmeCo/users, acmeCo/orders/v1";
        assert_eq!(
            text,
            [
                format!(
                    "trigger a (https://a.example.com): `collections[1]` is \"acmeCo/gone\", which is none of the materialization's binding collections: {known}"
                ),
                format!(
                    "trigger c (https://c.example.com): `collections[0]` is \"acmeCo/orders\", which is none of the materialization's binding collections: {known}"
                ),
                format!(
                    "trigger c (https://c.example.com): `collections[1]` is \"zzz/\", which is a prefix of none of the materialization's binding collections: {known}"
                ),
            ]
        );
        assert_eq!(errors[0].trigger_index(), Some(0));
        assert_eq!(errors[1].trigger_index(), Some(2));

        // Many bindings: the error lists 16 and counts the rest.
        let many: Vec<String> = (0..40).map(|i| format!("acmeCo/c{i:02}")).collect();
        let ValidationErrors(errors) =
            crate::validate_collections(&triggers, &many).expect_err("unmatched");
        assert_eq!(errors.len(), 5);
        let text = errors[0].to_string();
        assert!(
            text.ends_with("acmeCo/c14, acmeCo/c15 (and 24 more)"),
            "{text}"
        );
        let ValidationErrors(errors) =
            crate::validate_collections(&triggers, &[]).expect_err("no bindings");
        assert!(
            errors[0]
                .to_string()
                .ends_with("binding collections: it has none")
        );

        let good: Vec<String> = [
            "acmeCo/orders",
            "acmeCo/orders/v1",
            "acmeCo/gone",
            "acmeCo/users",
            "zzz/1",
        ]
        .map(String::from)
        .to_vec();
        crate::validate_collections(&triggers, &good).expect("every entry matches");
    }
}
