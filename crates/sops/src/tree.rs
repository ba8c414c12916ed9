//! A JSON or YAML document as SOPS sees it: maps keep their key order, because the MAC
//! covers values in document order, and scalars keep the kind sops gives them (a JSON
//! number is always a float to sops; a YAML integer is an int).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use std::fmt;

/// One value of a document, as sops sees it. Deserializing refuses duplicate and
/// non-string keys, as sops does; `Debug` shows the shape only (a decrypted tree holds
/// secrets).
#[derive(Clone, PartialEq)]
pub enum Node {
    /// `null`: sops neither encrypts nor hashes it.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (YAML's; JSON numbers are floats to sops).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string, or an `ENC[...]` leaf.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// Keys in document order; duplicates are refused when reading.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The value under `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string under `key` of a map, if it is one.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Node::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// Converts to a `serde_json::Value`, which serde can deserialize any type
    /// from. JSON numbers are floats to sops, so an integral float becomes an integer
    /// again, as the same text would have parsed.
    pub fn into_json(self) -> Result<serde_json::Value, NonFiniteNumber> {
        Ok(match self {
            Node::Null => serde_json::Value::Null,
            Node::Bool(b) => serde_json::Value::Bool(b),
            Node::Int(i) => serde_json::Value::from(i),
            Node::Float(f) => {
                if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    // In range and integral, so the cast is exact.
                    serde_json::Value::from(f as u64)
                } else if f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                    serde_json::Value::from(f as i64)
                } else {
                    serde_json::Number::from_f64(f)
                        .map(serde_json::Value::Number)
                        .ok_or(NonFiniteNumber)?
                }
            }
            Node::Str(s) => serde_json::Value::String(s),
            Node::Seq(items) => serde_json::Value::Array(
                items
                    .into_iter()
                    .map(Node::into_json)
                    .collect::<Result<_, _>>()?,
            ),
            Node::Map(entries) => serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| v.into_json().map(|v| (k, v)))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

impl Node {
    /// Rebuilds the tree with every scalar replaced by `f(scalar, path)`, in document
    /// order (the order sops's MAC covers). Nulls are kept as they are and never passed
    /// to `f`: sops neither encrypts nor hashes them.
    pub(crate) fn map_leaves<'a, E>(
        &'a self,
        steps: &mut Vec<Step<'a>>,
        f: &mut impl FnMut(&Node, &[Step<'a>]) -> Result<Node, E>,
    ) -> Result<Node, E> {
        match self {
            Node::Null => Ok(Node::Null),
            Node::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    steps.push(Step::Index(i));
                    out.push(item.map_leaves(steps, f)?);
                    steps.pop();
                }
                Ok(Node::Seq(out))
            }
            Node::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    steps.push(Step::Key(key));
                    out.push((key.clone(), value.map_leaves(steps, f)?));
                    steps.pop();
                }
                Ok(Node::Map(out))
            }
            leaf => f(leaf, steps),
        }
    }
}

/// Shows the shape only: a decrypted tree holds secrets.
impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Null => f.write_str("null"),
            Node::Bool(_) => f.write_str("<bool>"),
            Node::Int(_) => f.write_str("<int>"),
            Node::Float(_) => f.write_str("<float>"),
            Node::Str(_) => f.write_str("<str>"),
            Node::Seq(items) => f.debug_list().entries(items).finish(),
            Node::Map(entries) => f
                .debug_map()
                .entries(entries.iter().map(|(k, v)| (k, v)))
                .finish(),
        }
    }
}

/// NaN or an infinity, which JSON cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a number is not finite")]
pub struct NonFiniteNumber;

/// One step of a path: sops joins only map keys; errors show list indices too.
#[derive(Clone, Copy)]
pub(crate) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The path of a value for people: `config[0].headers.Authorization`. Keys are never
/// encrypted by sops, so a path is safe to print.
pub(crate) fn display_path(steps: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    if out.is_empty() {
        out.push_str("<root>");
    }
    out
}

/// The map keys of a path, which is what sops matches its encryption rules against and
/// joins (with `:`) into a value's additional data.
pub(crate) fn key_path<'a>(steps: &[Step<'a>]) -> Vec<&'a str> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::Key(key) => Some(*key),
            Step::Index(_) => None,
        })
        .collect()
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        // Past i64 (Go's int) sops has no integer type either; a float keeps the magnitude.
        Ok(i64::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        // Keys seen, so a map of n keys costs n look-ups, not n² comparisons (40,000
        // headers took 15 s).
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<Node>()? {
            let Node::Str(key) = key else {
                // sops refuses non-string keys too.
                return Err(de::Error::custom("a map key is not a string"));
            };
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Int(i) => serializer.serialize_i64(*i),
            Node::Float(f) => serializer.serialize_f64(*f),
            Node::Str(s) => serializer.serialize_str(s),
            Node::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keep_document_order_and_refuse_duplicates() {
        let node: Node =
            serde_json::from_str(r#"{"b": 1, "a": [true, null, 1.5]}"#).expect("succeeds");
        let Node::Map(entries) = &node else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0, "b");
        assert_eq!(entries[1].0, "a");
        assert!(serde_json::from_str::<Node>(r#"{"a": 1, "a": 2}"#).is_err());
        assert!(serde_yaml_ng::from_str::<Node>("a: 1\na: 2\n").is_err());
        assert!(serde_yaml_ng::from_str::<Node>("1: x\n").is_err());
    }

    #[test]
    fn paths_show_indices_but_sops_paths_do_not() {
        let steps = [
            Step::Key("config"),
            Step::Index(1),
            Step::Key("signingSecrets"),
            Step::Index(0),
        ];
        assert_eq!(display_path(&steps), "config[1].signingSecrets[0]");
        assert_eq!(key_path(&steps), ["config", "signingSecrets"]);
        assert_eq!(display_path(&[]), "<root>");
    }

    #[test]
    fn integral_floats_become_integers() {
        let json = Node::Map(vec![
            ("a".into(), Node::Float(30.0)),
            ("b".into(), Node::Float(1.5)),
            ("c".into(), Node::Float(-2.0)),
        ])
        .into_json()
        .expect("succeeds");
        assert_eq!(json, serde_json::json!({"a": 30, "b": 1.5, "c": -2}));
        assert!(Node::Float(f64::NAN).into_json().is_err());
    }
}
