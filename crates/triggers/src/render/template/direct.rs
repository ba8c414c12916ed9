//! Direct rendering of the common template shape.
//!
//! Nearly every webhook payload is JSON text with `{{variable}}` and `{{json variable}}`
//! in it. For such a template, Handlebars spends most of a render building a JSON context
//! from the variables (every string copied into a map) and walking it by path. A
//! [`DirectTemplate`] is planned once, from the template Handlebars compiled, and writes
//! the variables straight into the output: byte for byte what Handlebars renders (unit
//! tests and the `template` fuzz target compare the two on every render).
//!
//! Anything else (blocks, nested paths, literals, other helpers, partials) has no plan and
//! keeps Handlebars, as does a render whose value Handlebars would fail on. A variable
//! may be named bare or as `this.name` (outside a block, `this` is the root: the same
//! path to Handlebars).

use super::headers::TemplateHeaders;
use crate::render::variables::Variables;
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Path, PathSeg};
use std::io::Write as _;
use time::format_description::well_known::Rfc3339;

/// Why a direct render gave no payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirectFailure {
    /// The payload would be longer than the bound.
    TooLarge,
    /// A value cannot be written (a time RFC 3339 cannot represent): Handlebars says why.
    Unrepresentable,
}

/// A compiled template planned as text and variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirectTemplate {
    parts: Vec<Part>,
    /// The total length of the text parts: the output's size before any value.
    text_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `{{variable}}` or `{{{variable}}}`: Handlebars' plain rendering, unescaped.
    Value(Variable),
    /// `{{json variable}}`: the value as compact JSON.
    Json(Variable),
}

/// One of the variables a template sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variable {
    MaterializationName,
    CollectionNames,
    ConnectorImage,
    FlowPublishedAtMin,
    FlowPublishedAtMax,
    FlowRunId,
    RunId,
    TransactionCount,
    FirstCommitSeq,
    LastCommitSeq,
    WebhookId,
    /// `headers.<Name>`: the template's header at this position.
    Header(usize),
}

impl Variable {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "materialization_name" => Variable::MaterializationName,
            "collection_names" => Variable::CollectionNames,
            "connector_image" => Variable::ConnectorImage,
            "flow_published_at_min" => Variable::FlowPublishedAtMin,
            "flow_published_at_max" => Variable::FlowPublishedAtMax,
            "flow_run_id" => Variable::FlowRunId,
            "run_id" => Variable::RunId,
            "transaction_count" => Variable::TransactionCount,
            "first_commit_seq" => Variable::FirstCommitSeq,
            "last_commit_seq" => Variable::LastCommitSeq,
            "webhook_id" => Variable::WebhookId,
            _ => return None,
        })
    }
}

/// A variable's value for one render, borrowed from the variables.
enum Value<'a> {
    Str(&'a str),
    List(&'a [String]),
    Number(u64),
    Time(time::OffsetDateTime),
}

impl DirectTemplate {
    /// The plan of `template`, or `None` if it uses anything but text, comments, a
    /// variable by its bare name (or `headers.<Name>` of one of `headers`, the headers
    /// the template names), and the `json` helper of one such variable.
    pub(crate) fn plan(template: &Template, headers: &TemplateHeaders) -> Option<Self> {
        let mut parts = Vec::with_capacity(template.elements.len());
        for element in &template.elements {
            match element {
                TemplateElement::RawString(text) => parts.push(Part::Text(text.clone())),
                TemplateElement::Comment(_) => {}
                TemplateElement::Expression(expression)
                | TemplateElement::HtmlExpression(expression) => {
                    parts.push(plan_expression(expression, headers)?)
                }
                _ => return None,
            }
        }
        let text_len = parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.len(),
                Part::Value(_) | Part::Json(_) => 0,
            })
            .sum();
        Some(Self { parts, text_len })
    }

    /// Renders against `variables`, a trigger's `webhook_id` and the headers the plan was
    /// made with (their values, or the marker if `redact`), writing at most `max` bytes
    /// (the same bound Handlebars' render has). A value RFC 3339 cannot represent is
    /// [`DirectFailure::Unrepresentable`], so Handlebars reports it.
    pub(crate) fn render(
        &self,
        variables: &Variables,
        webhook_id: &str,
        headers: &TemplateHeaders,
        redact: bool,
        max: usize,
    ) -> Result<String, DirectFailure> {
        use DirectFailure::Unrepresentable as Bad;
        let values = Values {
            variables,
            webhook_id,
            headers,
            redact,
        };
        let mut out = Vec::with_capacity(self.capacity(&values).min(max));
        for part in &self.parts {
            match part {
                Part::Text(text) => out.extend_from_slice(text.as_bytes()),
                Part::Value(variable) => match values.get(*variable) {
                    Value::Str(text) => out.extend_from_slice(text.as_bytes()),
                    Value::Number(number) => write!(out, "{number}").map_err(|_| Bad)?,
                    Value::Time(at) => {
                        at.format_into(&mut out, &Rfc3339).map_err(|_| Bad)?;
                    }
                    // Handlebars renders an array as `[a, b]`, items unquoted.
                    Value::List(items) => {
                        out.push(b'[');
                        for (i, item) in items.iter().enumerate() {
                            if i > 0 {
                                out.extend_from_slice(b", ");
                            }
                            out.extend_from_slice(item.as_bytes());
                            if out.len() > max {
                                return Err(DirectFailure::TooLarge);
                            }
                        }
                        out.push(b']');
                    }
                },
                Part::Json(variable) => match values.get(*variable) {
                    Value::Str(text) => write_json_str(&mut out, text),
                    Value::List(items) => {
                        out.push(b'[');
                        for (i, item) in items.iter().enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            write_json_str(&mut out, item);
                            if out.len() > max {
                                return Err(DirectFailure::TooLarge);
                            }
                        }
                        out.push(b']');
                    }
                    Value::Number(number) => {
                        serde_json::to_writer(&mut out, &number).map_err(|_| Bad)?
                    }
                    Value::Time(at) => {
                        let text = at.format(&Rfc3339).map_err(|_| Bad)?;
                        serde_json::to_writer(&mut out, &text).map_err(|_| Bad)?
                    }
                },
            }
            if out.len() > max {
                return Err(DirectFailure::TooLarge);
            }
        }
        // Every part wrote UTF-8; the check is what keeps this free of `unsafe`.
        String::from_utf8(out).map_err(|_| Bad)
    }

    /// Room for the text and the values (times and numbers are short), so a render
    /// allocates once.
    fn capacity(&self, values: &Values<'_>) -> usize {
        let values: usize = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Text(_) => 0,
                Part::Value(variable) | Part::Json(variable) => match values.get(*variable) {
                    Value::Str(text) => text.len() + 2,
                    Value::List(items) => items.iter().map(|item| item.len() + 4).sum(),
                    Value::Number(_) | Value::Time(_) => 40,
                },
            })
            .sum();
        self.text_len + values + 16
    }
}

/// `text` as a JSON string, exactly as `serde_json` writes it. Most names need no
/// escaping: checking that first, without branching per byte, and copying the bytes is
/// quicker than escaping byte by byte.
fn write_json_str(out: &mut Vec<u8>, text: &str) {
    // Bitwise `|`, not `||`: without a branch per byte the loop vectorises.
    let escaped = text.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !escaped {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail, and a str serialises.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// What one render writes its values from.
struct Values<'a> {
    variables: &'a Variables,
    webhook_id: &'a str,
    headers: &'a TemplateHeaders,
    redact: bool,
}

impl<'a> Values<'a> {
    /// A variable's value.
    fn get(&self, variable: Variable) -> Value<'a> {
        let (variables, webhook_id) = (self.variables, self.webhook_id);
        match variable {
            Variable::MaterializationName => Value::Str(&variables.materialization_name),
            Variable::CollectionNames => Value::List(&variables.collection_names),
            Variable::ConnectorImage => Value::Str(&variables.connector_image),
            Variable::FlowRunId => Value::Str(&variables.flow_run_id),
            Variable::RunId => Value::Str(&variables.run_id),
            Variable::WebhookId => Value::Str(webhook_id),
            Variable::TransactionCount => Value::Number(variables.transaction_count),
            Variable::FirstCommitSeq => Value::Number(variables.first_commit_seq),
            Variable::LastCommitSeq => Value::Number(variables.last_commit_seq),
            Variable::FlowPublishedAtMin => Value::Time(variables.flow_published_at_min),
            Variable::FlowPublishedAtMax => Value::Time(variables.flow_published_at_max),
            Variable::Header(i) => Value::Str(self.headers.value(i, self.redact)),
        }
    }
}

/// The plan of one `{{…}}`: a bare variable, or `json` of one.
fn plan_expression(expression: &HelperTemplate, headers: &TemplateHeaders) -> Option<Part> {
    if expression.block
        || expression.template.is_some()
        || expression.inverse.is_some()
        || expression.block_param.is_some()
        || !expression.hash.is_empty()
    {
        return None;
    }
    match (&expression.name, expression.params.as_slice()) {
        (name, []) => Some(Part::Value(variable_of(name, headers)?)),
        (Parameter::Name(helper), [param]) if helper == "json" => {
            Some(Part::Json(variable_of(param, headers)?))
        }
        _ => None,
    }
}

/// The variable a parameter names by a single bare segment (`materialization_name`, not
/// `@root…` or `../…`), or a header by `headers.<Name>`.
fn variable_of(parameter: &Parameter, headers: &TemplateHeaders) -> Option<Variable> {
    match parameter {
        Parameter::Path(Path::Relative((segments, _))) => match segments.as_slice() {
            [PathSeg::Named(name)] => Variable::from_name(name),
            [PathSeg::Named(first), PathSeg::Named(name)] if first == "headers" => {
                headers.position(name).map(Variable::Header)
            }
            _ => None,
        },
        _ => None,
    }
}
