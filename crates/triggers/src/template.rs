//! Payload templates: Handlebars, compiled once per config, strict, without HTML escaping.

use crate::variables::Variables;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonTruthy as _, Output, PathAndJson,
    RenderContext, RenderErrorReason, Renderable as _,
};

/// The compiled payload templates of one config, one per trigger.
///
/// Strict mode makes an unknown variable an error instead of an empty string, and escaping
/// is off because payloads are JSON, not HTML. The `json` helper writes any value as
/// JSON (`{{json materialization_name}}` gives a quoted, escaped string;
/// `{{json collection_names}}` an array), so values with quotes or newlines stay valid.
pub struct Templates {
    registry: Handlebars<'static>,
}

/// A template that does not compile or render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is not valid Handlebars.
    #[error("template syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line in the template.
        line: usize,
        /// 1-based column in the template.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// The template uses a variable that does not exist.
    #[error(
        "unknown variable `{variable}` at line {line}, column {column}; \
         the variables are: {}", crate::VARIABLE_NAMES.join(", ")
    )]
    UnknownVariable {
        /// The path the template used, e.g. `materialisation_name` or `this.name`.
        variable: String,
        /// 1-based line in the template.
        line: usize,
        /// 1-based column in the template.
        column: usize,
    },
    /// Any other rendering failure (an unknown helper, a bad helper argument).
    #[error("template failed to render at line {line}, column {column}: {message}")]
    Render {
        /// 1-based line in the template (0 when unknown).
        line: usize,
        /// 1-based column in the template (0 when unknown).
        column: usize,
        /// What went wrong.
        message: String,
    },
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// An empty set with strict mode, no escaping and the `json` helper.
    pub fn new() -> Self {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        registry.register_helper("json", Box::new(json_helper));
        registry.register_helper("if", Box::new(StrictIf { positive: true }));
        registry.register_helper("unless", Box::new(StrictIf { positive: false }));
        Self { registry }
    }

    /// Compiles the template of trigger `index`.
    pub fn compile(&mut self, index: usize, source: &str) -> Result<(), TemplateError> {
        self.registry
            .register_template_string(&name(index), source)
            .map_err(|err| {
                let (line, column) = err.pos().unwrap_or((0, 0));
                TemplateError::Syntax {
                    line,
                    column,
                    message: err.reason().to_string(),
                }
            })
    }

    /// Renders trigger `index` against a context made by [`Templates::context`].
    pub fn render(
        &self,
        index: usize,
        context: &serde_json::Value,
    ) -> Result<String, TemplateError> {
        self.render_data(index, context)
    }

    fn render_data(
        &self,
        index: usize,
        data: &impl serde::Serialize,
    ) -> Result<String, TemplateError> {
        self.registry.render(&name(index), data).map_err(|err| {
            let line = err.line_no.unwrap_or(0);
            let column = err.column_no.unwrap_or(0);
            match err.reason() {
                RenderErrorReason::MissingVariable(path) => TemplateError::UnknownVariable {
                    variable: path.clone().unwrap_or_default(),
                    line,
                    column,
                },
                reason => TemplateError::Render {
                    line,
                    column,
                    message: reason.to_string(),
                },
            }
        })
    }

    /// Renders trigger `index` for a transaction: its variables plus the trigger's
    /// `webhook_id`, serialised once per render (as bare Handlebars would). Validation's
    /// trial render and delivery both come here, so publish time checks the path that
    /// runs in production.
    pub fn render_variables(
        &self,
        index: usize,
        variables: &Variables,
        webhook_id: &str,
    ) -> Result<String, TemplateError> {
        self.render_data(
            index,
            &TriggerVariables {
                variables,
                webhook_id,
            },
        )
    }

    /// A transaction's variables as a JSON context, for [`Templates::render`] (tests and
    /// fuzzing render arbitrary contexts; it carries no `webhook_id`).
    pub fn context(variables: &Variables) -> serde_json::Value {
        // Infallible in practice (strings, a list of strings, formatted times); a failure
        // would yield a context every template fails against, not a panic.
        serde_json::to_value(variables).unwrap_or_default()
    }
}

/// A transaction's variables plus one trigger's `webhook_id`, serialised as one object.
#[derive(serde::Serialize)]
struct TriggerVariables<'a> {
    #[serde(flatten)]
    variables: &'a Variables,
    webhook_id: &'a str,
}

fn name(index: usize) -> String {
    format!("trigger[{index}]")
}

/// Strict mode does not reach helper arguments, so a helper given an unknown variable
/// would see `null`. Every variable always exists, so a missing one is a typo: refuse it.
fn require_present(param: &PathAndJson<'_>) -> Result<(), RenderErrorReason> {
    if param.is_value_missing() {
        Err(RenderErrorReason::MissingVariable(
            param.relative_path().cloned(),
        ))
    } else {
        Ok(())
    }
}

/// `{{#if x}}` and `{{#unless x}}` as built in, except that an unknown `x` is an error
/// rather than false: `{{#if flow_published_at}}` must not silently take the else branch.
struct StrictIf {
    positive: bool,
}

impl HelperDef for StrictIf {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        registry: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let name = if self.positive { "if" } else { "unless" };
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, 0))?;
        require_present(param)?;
        let include_zero = h
            .hash_get("includeZero")
            .and_then(|v| v.value().as_bool())
            .unwrap_or(false);
        let branch = if param.value().is_truthy(include_zero) == self.positive {
            h.template()
        } else {
            h.inverse()
        };
        match branch {
            Some(template) => template.render(registry, ctx, rc, out),
            None => Ok(()),
        }
    }
}

/// `{{json value}}`: writes `value` as JSON.
fn json_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let param = h
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
    require_present(param)?;
    let text = serde_json::to_string(param.value()).map_err(RenderErrorReason::SerdeError)?;
    out.write(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str) -> Result<String, TemplateError> {
        let mut templates = Templates::new();
        templates.compile(0, source)?;
        let variables = Variables::placeholder();
        templates.render_variables(0, &variables, &crate::webhook_id(&variables.flow_run_id, 0))
    }

    #[test]
    fn renders_variables_without_html_escaping() {
        let out = render(
            r#"{"image": "{{connector_image}}", "at": "{{flow_published_at_max}}", "x": "<&>"}"#,
        )
        .expect("renders");
        assert_eq!(
            out,
            r#"{"image": "ghcr.io/estuary/materialize-example:v1", "at": "2024-01-01T00:05:00.7654321Z", "x": "<&>"}"#
        );
    }

    #[test]
    fn each_iterates_collection_names() {
        let out = render(
            r#"[{{#each collection_names}}"{{this}}"{{#unless @last}},{{/unless}}{{/each}}]"#,
        )
        .expect("renders");
        assert_eq!(
            out,
            r#"["acmeCo/example/collection-a","acmeCo/example/collection-b"]"#
        );
    }

    #[test]
    fn json_helper_escapes_quotes_and_newlines() {
        let mut templates = Templates::new();
        templates
            .compile(
                0,
                r#"{"name": {{json materialization_name}}, "all": {{json collection_names}}}"#,
            )
            .expect("compiles");
        let mut variables = Variables::placeholder();
        variables.materialization_name = "a \"quoted\"\nname\\".to_string();
        let out = templates
            .render(0, &Templates::context(&variables))
            .expect("renders");
        let value: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(value["name"], "a \"quoted\"\nname\\");
        assert_eq!(value["all"][1], "acmeCo/example/collection-b");
    }

    #[test]
    fn unknown_variable_names_the_variable_line_and_column() {
        let err = render("{\n  \"a\": \"{{materialisation_name}}\"\n}").expect_err("strict");
        assert_eq!(
            err,
            TemplateError::UnknownVariable {
                variable: "materialisation_name".to_string(),
                line: 2,
                column: 9,
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("materialization_name, collection_names"),
            "{text}"
        );
    }

    #[test]
    fn unknown_variable_as_a_helper_argument_is_an_error_too() {
        let err = render("{{json nope}}").expect_err("strict");
        assert!(
            matches!(&err, TemplateError::UnknownVariable { variable, .. } if variable == "nope"),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_variable_in_block_helpers_is_an_error() {
        for source in [
            "{{#each nope}}x{{/each}}",
            "{{#if nope}}x{{/if}}",
            "{{#unless nope}}x{{/unless}}",
            "{{#with nope}}x{{/with}}",
            "{{#each collection_names}}{{this.nope}}{{/each}}",
        ] {
            let err = render(source).expect_err(source);
            assert!(
                matches!(&err, TemplateError::UnknownVariable { .. }),
                "{source}: {err:?}"
            );
        }
    }

    #[test]
    fn if_and_unless_still_branch_on_known_variables() {
        let out = render(
            "{{#if collection_names}}some{{else}}none{{/if}} {{#unless flow_run_id}}no{{else}}id{{/unless}}",
        )
        .expect("renders");
        assert_eq!(out, "some id");
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = render("{\n \"a\": {{#each collection_names}}\n}").expect_err("unclosed block");
        assert!(
            matches!(err, TemplateError::Syntax { line, .. } if line >= 2),
            "{err:?}"
        );
    }

    #[test]
    fn webhook_id_is_per_trigger_and_derived_from_the_run_id() {
        let mut templates = Templates::new();
        for index in 0..2 {
            templates
                .compile(index, "{{webhook_id}} {{flow_run_id}}")
                .expect("compiles");
        }
        let variables = Variables::placeholder();
        let run = &variables.flow_run_id;
        for index in 0..2 {
            let id = crate::webhook_id(run, index);
            let out = templates
                .render_variables(index, &variables, &id)
                .expect("renders");
            assert_eq!(out, format!("{id} {run}"));
        }
        let context = Templates::context(&variables);
        // The transaction-wide context alone has no `webhook_id`.
        assert!(matches!(
            templates.render(0, &context),
            Err(TemplateError::UnknownVariable { variable, .. }) if variable == "webhook_id"
        ));
    }

    #[test]
    fn unknown_helper_is_a_render_error() {
        let err = render("{{shout connector_image}}").expect_err("no such helper");
        assert!(matches!(err, TemplateError::Render { .. }), "{err:?}");
    }
}
