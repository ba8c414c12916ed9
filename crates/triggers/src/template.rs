//! Payload templates: Handlebars, compiled once per config, strict, without HTML escaping.

mod direct;

use crate::variables::Variables;
use direct::DirectTemplate;
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
///
/// Templates of the common shape (text, `{{variable}}`, `{{json variable}}`) also get a
/// direct plan that renders the same bytes without building a JSON context per render.
pub struct Templates {
    registry: Handlebars<'static>,
    /// By trigger index: the direct plan, where the template has one.
    direct: Vec<Option<DirectTemplate>>,
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
        Self {
            registry,
            direct: Vec::new(),
        }
    }

    /// Compiles the template of trigger `index`.
    pub fn compile(&mut self, index: usize, source: &str) -> Result<(), TemplateError> {
        let name = name(index);
        if index >= self.direct.len() {
            self.direct.resize(index + 1, None);
        }
        self.direct[index] = None;
        self.registry
            .register_template_string(&name, source)
            .map_err(|err| {
                let (line, column) = err.pos().unwrap_or((0, 0));
                TemplateError::Syntax {
                    line,
                    column,
                    message: err.reason().to_string(),
                }
            })?;
        self.direct[index] = self
            .registry
            .get_template(&name)
            .and_then(DirectTemplate::plan);
        Ok(())
    }

    /// Whether trigger `index` renders by its direct plan: for tests and benches.
    #[doc(hidden)]
    pub fn renders_directly(&self, index: usize) -> bool {
        matches!(self.direct.get(index), Some(Some(_)))
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
                // Strict mode reports a missing *result* (`lookup` past the end of a list)
                // as a variable with no name: say what happened instead.
                RenderErrorReason::MissingVariable(path)
                    if path.as_deref().is_none_or(str::is_empty) =>
                {
                    TemplateError::Render {
                        line,
                        column,
                        message: "a looked-up value does not exist (a `lookup` past the end of \
                                  `collection_names`, say)"
                            .to_string(),
                    }
                }
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
        if let Some(Some(direct)) = self.direct.get(index)
            && let Some(rendered) = direct.render(variables, webhook_id)
        {
            return Ok(rendered);
        }
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

    /// Renders `source` both ways: by the direct plan (which it must have, if `direct`)
    /// and by Handlebars against the serialised context. They must agree byte for byte.
    fn render_both(source: &str, variables: &Variables, direct: bool) -> String {
        let mut templates = Templates::new();
        templates.compile(3, source).expect("compiles");
        assert_eq!(templates.renders_directly(3), direct, "{source}");
        let id = crate::webhook_id(&variables.flow_run_id, 3);
        let ours = templates
            .render_variables(3, variables, &id)
            .unwrap_or_else(|err| panic!("{source}: {err}"));
        let mut context = Templates::context(variables);
        context["webhook_id"] = serde_json::Value::String(id);
        let handlebars = templates
            .render(3, &context)
            .unwrap_or_else(|err| panic!("{source}: {err}"));
        assert_eq!(ours, handlebars, "{source}");
        ours
    }

    #[test]
    fn direct_rendering_matches_handlebars_byte_for_byte() {
        let mut odd = Variables::placeholder();
        odd.materialization_name = "a \"quoted\"\nname\\ </script> \u{1F600} \u{7}".to_string();
        odd.collection_names = vec!["x, y".to_string(), String::new(), "\"q\"".to_string()];
        odd.connector_image = "{{connector_image}}".to_string();
        odd.transaction_count = u64::MAX;
        let mut none = Variables::placeholder();
        none.collection_names.clear();
        none.flow_published_at_min = time::macros::datetime!(1970-01-01 00:00:00 UTC);
        let every_variable = crate::VARIABLE_NAMES
            .iter()
            .map(|name| format!("{name}={{{{{name}}}}} json={{{{json {name}}}}}\n"))
            .collect::<String>();
        let direct = [
            every_variable.as_str(),
            "{\"dag_run_id\": \"flow-{{flow_run_id}}\", \"from\": \"{{flow_published_at_min}}\"}",
            "",
            "no variables at all",
            r#"{"name": "{{materialization_name}}", "all": {{json collection_names}}}"#,
            "{{{materialization_name}}} {{&connector_image}} {{! a comment }}{{!-- another --}}",
            "  {{~ flow_run_id ~}}  \n {{~json webhook_id}}",
            "{{[materialization_name]}} \\{{not_a_variable}}",
            "{\n  {{json transaction_count}}\n}\n",
            // Outside any block, `this` is the root: the same segments as the bare name.
            "{{this.materialization_name}} {{./flow_run_id}}",
        ];
        for variables in [Variables::placeholder(), odd, none] {
            for source in direct {
                render_both(source, &variables, true);
            }
            for source in [
                "{{#each collection_names}}{{this}},{{/each}}",
                "{{#if collection_names}}some{{/if}}",
                "{{json materialization_name pretty=true}}",
                "{{json \"literal\"}}",
                "{{#with materialization_name}}{{this}}{{/with}}",
                "{{@root.flow_run_id}}",
            ] {
                render_both(source, &variables, false);
            }
        }
    }

    #[test]
    fn templates_with_unknown_variables_have_no_direct_plan() {
        let mut templates = Templates::new();
        templates
            .compile(0, "{{materialisation_name}}")
            .expect("compiles");
        assert!(!templates.renders_directly(0));
        // A recompiled index forgets its old plan.
        templates.compile(1, "{{flow_run_id}}").expect("compiles");
        assert!(templates.renders_directly(1));
        templates
            .compile(1, "{{#each collection_names}}{{/each}}")
            .expect("compiles");
        assert!(!templates.renders_directly(1));
    }

    #[test]
    fn a_lookup_past_the_end_says_so_rather_than_naming_no_variable() {
        let err = render("{\"third\": \"{{lookup collection_names 2}}\"}").expect_err("two names");
        assert!(
            matches!(&err, TemplateError::Render { message, .. } if message.contains("lookup")),
            "{err:?}"
        );
        assert_eq!(
            render("{{lookup collection_names 1}}").expect("in range"),
            "acmeCo/example/collection-b"
        );
    }

    #[test]
    fn unknown_helper_is_a_render_error() {
        let err = render("{{shout connector_image}}").expect_err("no such helper");
        assert!(matches!(err, TemplateError::Render { .. }), "{err:?}");
    }
}
