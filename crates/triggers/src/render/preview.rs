//! Preview: render one trigger's payload without sending it, against placeholder
//! variables or values an operator gives, so a template can be checked against the
//! transaction it will describe before any webhook goes out.
//!
//! A preview shows only the payload: signing secrets never enter a template's context,
//! and a header value the template writes (`{{headers.Name}}`) is shown as
//! [`crate::REDACTED_HEADER_VALUE`], so nothing here can print a secret. For a trigger
//! with `auth` it also says where its `Authorization` comes from, without fetching the
//! token.

use crate::config::validate::{TriggerLabel, Triggers, json_error_message};
use crate::render::template::TemplateError;
use crate::render::variables::{VARIABLE_NAMES, Variables};
use crate::trigger_webhook_id;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The variables a preview or test-fire renders against: the placeholders of
/// [`Variables::placeholder`], with any values an operator gave put in their place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewVariables {
    variables: Variables,
    /// A given `webhook_id`; otherwise it is derived, as delivery derives it.
    webhook_id: Option<String>,
    /// Whether `flow_run_id` was given: a test-fire makes a fresh one otherwise, so a
    /// receiver that dedupes on `webhook-id` does not drop the second test.
    flow_run_id_given: bool,
    /// Whether `run_id` was given: a test-fire names the time it is sent otherwise.
    run_id_given: bool,
}

/// Given variables that cannot be used. Values are not secret (they describe a
/// transaction), but errors name the field rather than echo the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariablesInputError {
    /// The text is not JSON.
    #[error("variables are not valid JSON: {0}")]
    NotJson(String),
    /// The JSON is not an object of variable names to values.
    #[error("variables must be a JSON object of variable names to values, not {0}")]
    NotAnObject(&'static str),
    /// A name that is not a template variable (a typo, most often).
    #[error("unknown variable `{name}`; the variables are: {}", VARIABLE_NAMES.join(", "))]
    UnknownVariable {
        /// The name given.
        name: String,
    },
    /// A known variable with a value of the wrong type.
    #[error("variable `{name}` must be {expected}: {message}")]
    WrongType {
        /// The variable.
        name: &'static str,
        /// What it must be, e.g. `a string` or `an RFC 3339 time`.
        expected: &'static str,
        /// What was wrong with the value.
        message: String,
    },
}

/// Why a trigger's payload could not be previewed (or test-fired). Each names the trigger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreviewError {
    /// The index is past the config's last trigger.
    #[error("no trigger {index}: the config has {count} trigger(s)")]
    NoSuchTrigger {
        /// The index asked for.
        index: usize,
        /// How many triggers the config has.
        count: usize,
    },
    /// The template failed against these variables.
    #[error("{trigger}: `payloadTemplate`: {source}")]
    Template {
        /// The trigger.
        trigger: TriggerLabel,
        /// What failed, with line and column in the template.
        #[source]
        source: TemplateError,
    },
    /// The template rendered, but not to JSON with these variables (a value with a quote
    /// inserted without `{{json ...}}`, say).
    #[error(
        "{trigger}: the payload is not valid JSON with these variables \
         (at line {line}, column {column} of the output: {message}); \
         use {{{{json variable}}}} to insert a value as a JSON string or array"
    )]
    NotJson {
        /// The trigger.
        trigger: TriggerLabel,
        /// 1-based line in the rendered output.
        line: usize,
        /// 1-based column in the rendered output.
        column: usize,
        /// What the JSON parser found.
        message: String,
    },
}

/// One trigger's rendered payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The trigger.
    pub trigger: TriggerLabel,
    /// The `webhook_id` rendered into the payload (and sent as `webhook-id`).
    pub webhook_id: String,
    /// The payload, pretty-printed JSON (as rendered, if pretty-printing would make it
    /// longer than twice [`crate::MAX_PAYLOAD_BYTES`]).
    pub payload: String,
    /// For a trigger with `auth`, the `Authorization` it sends, with the token left out:
    /// `Bearer <token from https://login.example.com>`. No token is fetched.
    pub authorization: Option<String>,
}

impl Default for PreviewVariables {
    fn default() -> Self {
        Self::placeholder()
    }
}

impl PreviewVariables {
    /// The placeholder variables validation trial-renders with.
    pub fn placeholder() -> Self {
        Self {
            variables: Variables::placeholder(),
            webhook_id: None,
            flow_run_id_given: false,
            run_id_given: false,
        }
    }

    /// Placeholders overridden field by field by a JSON object of variable names to
    /// values, e.g. `{"collection_names": ["acmeCo/orders"], "transaction_count": 1}`.
    pub fn from_json(text: &str) -> Result<Self, VariablesInputError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|err| VariablesInputError::NotJson(err.to_string()))?;
        Self::from_value(value)
    }

    /// Like [`PreviewVariables::from_json`], from parsed JSON.
    pub fn from_value(value: serde_json::Value) -> Result<Self, VariablesInputError> {
        let serde_json::Value::Object(given) = value else {
            return Err(VariablesInputError::NotAnObject(json_kind(&value)));
        };
        let mut out = Self::placeholder();
        for (name, value) in given {
            out.set(&name, value)?;
        }
        Ok(out)
    }

    /// The variables, placeholders and given values together.
    pub fn variables(&self) -> &Variables {
        &self.variables
    }

    /// The `webhook_id` the trigger named `trigger_name` renders with: the given one, or
    /// derived from `flow_run_id` as delivery derives it.
    pub fn webhook_id(&self, trigger_name: &str) -> String {
        self.webhook_id
            .clone()
            .unwrap_or_else(|| trigger_webhook_id(&self.variables.flow_run_id, trigger_name))
    }

    /// Whether these variables name a webhook that may have been sent before: a given
    /// `flow_run_id`, `run_id` or `webhook_id` (a test-fire otherwise makes fresh ones).
    pub(crate) fn may_repeat(&self) -> bool {
        self.flow_run_id_given || self.run_id_given || self.webhook_id.is_some()
    }

    /// These variables with a fresh random `flow_run_id` and a `run_id` of now, unless
    /// given: what a test-fire sends, so each test has its own `webhook-id` and `run_id`.
    pub(crate) fn for_test_fire(&self) -> Self {
        let mut out = self.clone();
        if !out.flow_run_id_given {
            out.variables.flow_run_id = uuid::Uuid::new_v4().to_string();
        }
        // Receivers dedupe on `run_id` too: a test names the time it is sent.
        if !out.run_id_given {
            out.variables.run_id = crate::run_id(std::time::SystemTime::now());
        }
        out
    }

    fn set(&mut self, name: &str, value: serde_json::Value) -> Result<(), VariablesInputError> {
        if name == "run_id" {
            self.variables.run_id = typed("run_id", value)?;
            self.run_id_given = true;
            return Ok(());
        }
        let v = &mut self.variables;
        match name {
            "materialization_name" => {
                v.materialization_name = typed("materialization_name", value)?
            }
            "collection_names" => v.collection_names = typed("collection_names", value)?,
            "connector_image" => v.connector_image = typed("connector_image", value)?,
            "flow_published_at_min" => {
                v.flow_published_at_min = time_value("flow_published_at_min", value)?
            }
            "flow_published_at_max" => {
                v.flow_published_at_max = time_value("flow_published_at_max", value)?
            }
            "flow_run_id" => {
                v.flow_run_id = typed("flow_run_id", value)?;
                self.flow_run_id_given = true;
            }
            "transaction_count" => v.transaction_count = typed("transaction_count", value)?,
            "first_commit_seq" => v.first_commit_seq = typed("first_commit_seq", value)?,
            "last_commit_seq" => v.last_commit_seq = typed("last_commit_seq", value)?,
            "webhook_id" => self.webhook_id = Some(typed("webhook_id", value)?),
            _ => {
                return Err(VariablesInputError::UnknownVariable {
                    name: name.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// A value of a variable's own type; what serde expects is what the template sees.
fn typed<T: serde::de::DeserializeOwned + Expected>(
    name: &'static str,
    value: serde_json::Value,
) -> Result<T, VariablesInputError> {
    serde_json::from_value(value).map_err(|err| VariablesInputError::WrongType {
        name,
        expected: T::EXPECTED,
        message: err.to_string(),
    })
}

/// How an error describes the type a variable must have.
trait Expected {
    const EXPECTED: &'static str;
}

impl Expected for String {
    const EXPECTED: &'static str = "a string";
}

impl Expected for Vec<String> {
    const EXPECTED: &'static str = "an array of strings";
}

impl Expected for u64 {
    const EXPECTED: &'static str = "a non-negative integer";
}

fn time_value(
    name: &'static str,
    value: serde_json::Value,
) -> Result<OffsetDateTime, VariablesInputError> {
    let text: String = typed(name, value)?;
    OffsetDateTime::parse(&text, &Rfc3339).map_err(|err| VariablesInputError::WrongType {
        name,
        expected: "an RFC 3339 time, e.g. 2024-01-01T00:00:00Z",
        message: err.to_string(),
    })
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl Triggers {
    /// Renders trigger `index` against `variables` without sending it: the payload
    /// delivery would send, pretty-printed, and the `webhook_id` it carries. Header
    /// values are written as [`crate::REDACTED_HEADER_VALUE`] (a header written outside
    /// a JSON string, as a number say, then previews as invalid JSON).
    pub fn preview(
        &self,
        index: usize,
        variables: &PreviewVariables,
    ) -> Result<Preview, PreviewError> {
        let rendered = self.render_checked(index, variables, Headers::Redacted)?;
        // Indentation can make a deeply nested payload many times longer: past twice the
        // payload bound, the payload is shown as rendered.
        let payload = serde_json::to_string_pretty(&rendered.json)
            .ok()
            .filter(|pretty| pretty.len() <= 2 * crate::MAX_PAYLOAD_BYTES)
            .unwrap_or(rendered.body);
        let authorization = self.triggers[index]
            .auth
            .as_ref()
            .map(|auth| format!("Bearer <token from {}>", auth.origin()));
        Ok(Preview {
            trigger: rendered.trigger,
            webhook_id: rendered.webhook_id,
            payload,
            authorization,
        })
    }

    /// Renders trigger `index` and checks the output is JSON: what preview shows (header
    /// values redacted) and test-fire sends (with them; the body as rendered, not
    /// re-serialised).
    pub(crate) fn render_checked(
        &self,
        index: usize,
        variables: &PreviewVariables,
        headers: Headers,
    ) -> Result<Rendered, PreviewError> {
        let trigger = self
            .triggers
            .get(index)
            .ok_or(PreviewError::NoSuchTrigger {
                index,
                count: self.triggers.len(),
            })?;
        let label = trigger.label.clone();
        let webhook_id = variables.webhook_id(&label.name);
        let body = match headers {
            Headers::Sent => self.render(index, &variables.variables, &webhook_id),
            Headers::Redacted => {
                self.templates
                    .render_redacted(index, &variables.variables, &webhook_id)
            }
        }
        .map_err(|source| PreviewError::Template {
            trigger: label.clone(),
            source,
        })?;
        let json = serde_json::from_str(&body).map_err(|err| PreviewError::NotJson {
            trigger: label.clone(),
            line: err.line(),
            column: err.column(),
            message: json_error_message(&err),
        })?;
        Ok(Rendered {
            trigger: label,
            webhook_id,
            body,
            json,
        })
    }
}

/// What a render writes for `{{headers.Name}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Headers {
    /// The trigger's values: a request that is sent.
    Sent,
    /// [`crate::REDACTED_HEADER_VALUE`]: a preview.
    Redacted,
}

/// A rendered payload that is known to be JSON.
pub(crate) struct Rendered {
    pub(crate) trigger: TriggerLabel,
    pub(crate) webhook_id: String,
    /// As the template wrote it.
    pub(crate) body: String,
    pub(crate) json: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigFormat;
    use crate::webhook_id;

    fn triggers(template: &str) -> Triggers {
        let config = serde_json::json!({"config": [
            {"url": "https://example.com/hook", "payloadTemplate": template,
             "headers": {"Authorization": "Bearer hunter2"}},
        ]});
        crate::validate(&config.to_string(), ConfigFormat::Json).expect("valid")
    }

    #[test]
    fn every_documented_variable_can_be_given() {
        let values = [
            serde_json::json!("acmeCo/x"),
            serde_json::json!(["a", "b"]),
            serde_json::json!("img:v2"),
            serde_json::json!("2025-02-03T04:05:06Z"),
            serde_json::json!("2025-02-03T04:05:07.5Z"),
            serde_json::json!("run-7"),
            serde_json::json!("2025-02-03T04:05:00.000Z"),
            serde_json::json!(2),
            serde_json::json!(8),
            serde_json::json!(9),
            serde_json::json!("msg_given"),
        ];
        let given: serde_json::Map<String, serde_json::Value> = VARIABLE_NAMES
            .iter()
            .map(|n| n.to_string())
            .zip(values)
            .collect();
        let vars = PreviewVariables::from_value(given.into()).expect("all known");
        assert_eq!(vars.variables.materialization_name, "acmeCo/x");
        assert_eq!(vars.variables.collection_names, ["a", "b"]);
        assert_eq!(vars.variables.connector_image, "img:v2");
        assert_eq!(
            vars.variables.flow_published_at_max,
            time::macros::datetime!(2025-02-03 04:05:07.5 UTC)
        );
        assert_eq!(vars.variables.flow_run_id, "run-7");
        assert_eq!(vars.variables.run_id, "2025-02-03T04:05:00.000Z");
        assert_eq!(
            (
                vars.variables.transaction_count,
                vars.variables.first_commit_seq,
                vars.variables.last_commit_seq
            ),
            (2, 8, 9)
        );
        assert_eq!(vars.webhook_id("0"), "msg_given");
        assert_eq!(vars.for_test_fire().variables.flow_run_id, "run-7");
        assert_eq!(
            vars.for_test_fire().variables.run_id,
            "2025-02-03T04:05:00.000Z"
        );
    }

    #[test]
    fn given_values_override_placeholders_field_by_field() {
        let vars = PreviewVariables::from_json(r#"{"transaction_count": 1}"#).expect("valid");
        assert_eq!(
            vars.variables,
            Variables {
                transaction_count: 1,
                ..Variables::placeholder()
            }
        );
        assert_eq!(
            vars.webhook_id("1"),
            webhook_id(&Variables::placeholder().flow_run_id, 1)
        );
        assert_ne!(
            vars.for_test_fire().variables.flow_run_id,
            Variables::placeholder().flow_run_id
        );
    }

    #[test]
    fn bad_variables_are_typed_errors_naming_the_field() {
        let err =
            PreviewVariables::from_json(r#"{"materialisation_name": "x"}"#).expect_err("unknown");
        assert_eq!(
            err,
            VariablesInputError::UnknownVariable {
                name: "materialisation_name".into()
            }
        );
        assert!(
            err.to_string()
                .contains("materialization_name, collection_names")
        );

        let err =
            PreviewVariables::from_json(r#"{"transaction_count": "3"}"#).expect_err("wrong type");
        assert!(
            matches!(
                err,
                VariablesInputError::WrongType {
                    name: "transaction_count",
                    ..
                }
            ),
            "{err}"
        );
        let err = PreviewVariables::from_json(r#"{"flow_published_at_min": "yesterday"}"#)
            .expect_err("not a time");
        assert!(err.to_string().contains("flow_published_at_min"), "{err}");
        assert!(matches!(
            PreviewVariables::from_json("[1]"),
            Err(VariablesInputError::NotAnObject("an array"))
        ));
        assert!(matches!(
            PreviewVariables::from_json("{"),
            Err(VariablesInputError::NotJson(_))
        ));
    }

    #[test]
    fn preview_pretty_prints_the_payload_and_never_a_header() {
        let triggers = triggers(r#"{"id": "{{webhook_id}}", "n": {{transaction_count}}}"#);
        let preview = triggers
            .preview(0, &PreviewVariables::placeholder())
            .expect("renders");
        assert_eq!(preview.trigger.origin, "https://example.com");
        let expected_id = webhook_id(&Variables::placeholder().flow_run_id, 0);
        assert_eq!(preview.webhook_id, expected_id);
        assert_eq!(
            preview.payload,
            format!("{{\n  \"id\": \"{expected_id}\",\n  \"n\": 3\n}}")
        );
        assert!(!format!("{preview:?}").contains("hunter2"));
        assert_eq!(preview.authorization, None);
    }

    /// Issue 18, item 3b: a header the template writes previews as the marker, never its
    /// value; a test-fire (which is sent) renders the value itself.
    #[test]
    fn preview_shows_header_values_redacted_and_test_fire_renders_them() {
        let triggers = triggers(
            r#"{"auth": {{json headers.Authorization}}, "also": "{{headers.Authorization}}"}"#,
        );
        let preview = triggers
            .preview(0, &PreviewVariables::placeholder())
            .expect("renders");
        assert_eq!(
            preview.payload,
            "{\n  \"also\": \"<redacted>\",\n  \"auth\": \"<redacted>\"\n}"
        );
        assert!(!format!("{preview:?}").contains("hunter2"));
        let sent = triggers
            .render_checked(0, &PreviewVariables::placeholder(), Headers::Sent)
            .expect("renders");
        assert_eq!(sent.json["auth"], "Bearer hunter2");
        assert_eq!(sent.json["also"], "Bearer hunter2");
    }

    #[test]
    fn preview_shows_where_the_token_goes_without_fetching_it() {
        let config = serde_json::json!({"config": [
            {"url": "https://example.com/hook", "payloadTemplate": "{}",
             "auth": {"type": "oauth2ClientCredentials", "tokenUrl": "https://login.example.com:8443/oauth/token?tenant=t1",
                      "clientId": "id", "clientSecret": "hunter2"}},
        ]});
        let triggers = crate::validate(&config.to_string(), ConfigFormat::Json).expect("valid");
        let preview = triggers
            .preview(0, &PreviewVariables::placeholder())
            .expect("renders");
        assert_eq!(
            preview.authorization.as_deref(),
            Some("Bearer <token from https://login.example.com:8443>")
        );
        assert!(!format!("{preview:?}").contains("hunter2"));
    }

    #[test]
    fn a_deeply_nested_payload_is_previewed_within_twice_the_payload_bound() {
        let block = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let template = format!("[{}]", vec![block; 300].join(","));
        let preview = triggers(&template)
            .preview(0, &PreviewVariables::placeholder())
            .expect("renders");
        assert!(preview.payload.len() <= 2 * crate::MAX_PAYLOAD_BYTES);
        assert_eq!(preview.payload, template);
    }

    #[test]
    fn preview_errors_name_the_trigger() {
        let triggers = triggers(r#"{"name": "{{materialization_name}}"}"#);
        assert_eq!(
            triggers
                .preview(3, &PreviewVariables::placeholder())
                .expect_err("no such trigger"),
            PreviewError::NoSuchTrigger { index: 3, count: 1 }
        );
        let quoted = PreviewVariables::from_json(r#"{"materialization_name": "a\"b"}"#)
            .expect("valid variables");
        let err = triggers.preview(0, &quoted).expect_err("not JSON");
        assert!(
            err.to_string()
                .starts_with("trigger 0 (https://example.com): the payload is not valid JSON"),
            "{err}"
        );
    }
}
