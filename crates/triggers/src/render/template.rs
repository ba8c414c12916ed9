//! Payload templates: Handlebars, compiled once per config, strict, without HTML escaping,
//! and bounded: see [`shape`] for what a template may contain, and
//! [`MAX_PAYLOAD_BYTES`] for what a render may write.

mod direct;
mod headers;
mod shape;
mod timestamp;

use crate::config::secret::Secret;
use crate::render::variables::Variables;
use direct::{DirectFailure, DirectTemplate};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonTruthy as _, Output, PathAndJson,
    RenderContext, RenderError, RenderErrorReason, Renderable as _, ScopedJson,
};
pub use headers::REDACTED_HEADER_VALUE;
use headers::{HeaderHelper, TemplateHeaders};
use serde_json::Value as Json;
use shape::Shape;
pub use shape::{MAX_EXPRESSIONS, MAX_RENDER_STEPS, MAX_TEMPLATE_BYTES, MAX_TEMPLATE_NESTING};

/// Most bytes one render may write: a payload, in validation's trial render, a preview
/// and delivery alike. A render that would write more stops there with
/// [`TemplateError::PayloadTooLarge`].
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

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
    /// By trigger index: how many steps a render takes, for a compiled template.
    shapes: Vec<Option<Shape>>,
    /// By trigger index: the headers its template writes (`headers.<Name>`), with their
    /// values, for the direct plan. They never enter a render's context: the Handlebars
    /// templates call a helper per trigger that holds them (see [`headers`]).
    headers: Vec<TemplateHeaders>,
}

/// A template that does not compile or render, or is past a bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is longer than [`MAX_TEMPLATE_BYTES`]; it was not compiled.
    #[error("the template is {bytes} bytes, but at most {max} are allowed")]
    TooLarge {
        /// Its length.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// The template has more than [`MAX_EXPRESSIONS`] expressions.
    #[error("the template has more than {max} expressions (`{{{{…}}}}` and subexpressions)")]
    TooManyExpressions {
        /// The bound.
        max: usize,
    },
    /// Blocks and subexpressions nest deeper than [`MAX_TEMPLATE_NESTING`].
    #[error(
        "blocks and subexpressions nest more than {max} deep at line {line}, column {column} \
         (each `else if` is a level too)"
    )]
    TooDeep {
        /// The bound.
        max: usize,
        /// 1-based line in the template.
        line: usize,
        /// 1-based column in the template.
        column: usize,
    },
    /// An `#each` inside another: its cost would grow as a power of the collection count.
    #[error(
        "`#each` inside another `#each` at line {line}, column {column} is not allowed \
         (a render would cost collections^depth)"
    )]
    NestedEach {
        /// 1-based line in the template.
        line: usize,
        /// 1-based column in the template.
        column: usize,
    },
    /// A construct templates may not use (partials, decorators).
    #[error("{what} are not supported (line {line}, column {column})")]
    Unsupported {
        /// What it is.
        what: &'static str,
        /// 1-based line in the template.
        line: usize,
        /// 1-based column in the template.
        column: usize,
    },
    /// A helper that is not one of the template helpers.
    #[error(
        "unknown helper `{name}` at line {line}, column {column}; the helpers are: \
         #if, #unless, #each, #with, json, lookup, eq, ne, and, or, not, timestamp"
    )]
    UnknownHelper {
        /// The name used (its first 64 characters).
        name: String,
        /// 1-based line in the template.
        line: usize,
        /// 1-based column in the template.
        column: usize,
    },
    /// The render would take more than [`MAX_RENDER_STEPS`] steps for this transaction's
    /// collections (an `#each` body's expressions, once per collection).
    #[error(
        "rendering for {collections} collection(s) would take {steps} steps, but at most {max} \
         are allowed: make the `#each` body smaller"
    )]
    TooMuchWork {
        /// Steps this render would take.
        steps: u64,
        /// The bound.
        max: u64,
        /// The transaction's number of collections.
        collections: usize,
    },
    /// The render wrote more than [`MAX_PAYLOAD_BYTES`]; it was stopped there.
    #[error("the payload is longer than {max} bytes")]
    PayloadTooLarge {
        /// The bound.
        max: usize,
    },
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
    /// `headers.<Name>` names no header of the trigger (names match as configured, case
    /// included), or `headers` is written without exactly one name after it. Lists the
    /// trigger's header names, never a value.
    #[error(
        "`{path}` at line {line}, column {column} names no header of this trigger; {}",
        headers::header_hint(headers)
    )]
    UnknownHeader {
        /// The path the template used, e.g. `headers.X-Api-Kee` (its first 256 characters).
        path: String,
        /// 1-based line in the template.
        line: usize,
        /// 1-based column in the template.
        column: usize,
        /// The trigger's header names, as configured (at most [`crate::MAX_HEADERS`],
        /// each cut to its first 64 characters).
        headers: Vec<String>,
    },
    /// A header whose name has characters other than letters, digits, `-`, `_` and `$`,
    /// written without brackets (`{{headers.X.Key}}`), which Handlebars cannot read as
    /// one name.
    #[error(
        "`headers.{name}` at line {line}, column {column}: Handlebars cannot read this \
         header name in a path; write it in brackets, `headers.[{name}]`"
    )]
    HeaderNeedsBrackets {
        /// The header name, as configured (its first 64 characters).
        name: String,
        /// 1-based line in the template.
        line: usize,
        /// 1-based column (in bytes) of the `{{` that holds it.
        column: usize,
    },
    /// A header used other than written into the payload: as a helper's or block's
    /// argument (`{{timestamp headers.X "s"}}`, `{{#if headers.X}}`), or by a path that
    /// does not reach the root (`this.headers.X` or `../headers.X` inside `#each`).
    #[error(
        "`{path}` at line {line}, column {column}: a header's value can only be written into \
         the payload, as `{{{{headers.Name}}}}` or `{{{{json headers.Name}}}}` \
         (`@root.headers.Name` inside `#each` or `#with`), not given to a helper or a block"
    )]
    HeaderUse {
        /// The path the template used (its first 256 characters).
        path: String,
        /// 1-based line in the template.
        line: usize,
        /// 1-based column in the template.
        column: usize,
    },
    /// Any other rendering failure (a bad helper argument, say).
    #[error("template failed to render at line {line}, column {column}: {message}")]
    Render {
        /// 1-based line in the template (0 when unknown).
        line: usize,
        /// 1-based column in the template (0 when unknown).
        column: usize,
        /// What went wrong.
        message: String,
    },
    /// A helper given literal arguments it can never render (a precision `timestamp`
    /// does not know, the wrong number of arguments).
    #[error("`{helper}` at line {line}, column {column}: {message}")]
    HelperArguments {
        /// The helper.
        helper: &'static str,
        /// What is wrong with its arguments, and what it takes.
        message: String,
        /// 1-based line in the template.
        line: usize,
        /// 1-based column in the template.
        column: usize,
    },
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// An empty set with strict mode, no escaping, the `json` helper, and only the
    /// helpers whose cost per call is bounded (the allow-list is checked when a template compiles).
    pub fn new() -> Self {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        for removed in shape::REMOVED_HELPERS {
            registry.unregister_helper(removed);
        }
        registry.register_helper("json", Box::new(json_helper));
        registry.register_helper("if", Box::new(StrictIf { positive: true }));
        registry.register_helper("unless", Box::new(StrictIf { positive: false }));
        registry.register_helper("eq", Box::new(ScalarEq { equal: true }));
        registry.register_helper("ne", Box::new(ScalarEq { equal: false }));
        registry.register_helper("lookup", Box::new(Lookup));
        registry.register_helper(timestamp::NAME, Box::new(timestamp::Timestamp));
        Self {
            registry,
            direct: Vec::new(),
            shapes: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Compiles the template of trigger `index`, after checking its bounds: length,
    /// expressions and nesting before Handlebars parses it, then helpers, partials and
    /// `#each` nesting on the parsed tree. On error the index has no template.
    /// The template sees no `headers` (see [`Templates::compile_with_headers`]).
    pub fn compile(&mut self, index: usize, source: &str) -> Result<(), TemplateError> {
        self.compile_with_headers(index, source, &std::collections::BTreeMap::new())
    }

    /// [`Templates::compile`] for a trigger with `headers`: the template may write a
    /// header's value as `{{headers.Name}}` (Flow's spelling; the name as configured,
    /// case included, in brackets if it has characters other than letters, digits, `-`,
    /// `_` and `$`: `{{headers.[X.Key]}}`). A name the trigger does not have is
    /// [`TemplateError::UnknownHeader`]. Only the headers the template names are kept.
    pub fn compile_with_headers(
        &mut self,
        index: usize,
        source: &str,
        headers: &std::collections::BTreeMap<String, Secret>,
    ) -> Result<(), TemplateError> {
        let name = name(index);
        if index >= self.direct.len() {
            self.direct.resize(index + 1, None);
            self.shapes.resize(index + 1, None);
            self.headers.resize(index + 1, TemplateHeaders::default());
        }
        self.direct[index] = None;
        self.shapes[index] = None;
        self.headers[index] = TemplateHeaders::default();
        self.registry.unregister_template(&name);
        self.registry.unregister_template(&redacted_name(index));
        for redact in [false, true] {
            self.registry
                .unregister_helper(&headers::helper_name(index, redact));
        }
        shape::prescan(source)?;
        // A header name a path cannot hold, written without brackets, fails as a syntax
        // error or names no header: then say how to write it instead.
        let template = handlebars::template::Template::compile(source).map_err(|err| {
            let (line, column) = err.pos().unwrap_or((0, 0));
            headers::check_brackets(source, headers)
                .err()
                .unwrap_or(TemplateError::Syntax {
                    line,
                    column,
                    message: err.reason().to_string(),
                })
        })?;
        let (shape, written) = shape::check(&template, headers).map_err(|err| match err {
            TemplateError::UnknownHeader { .. } => headers::check_brackets(source, headers)
                .err()
                .unwrap_or(err),
            err => err,
        })?;
        let written = TemplateHeaders::new(&written, headers);
        self.direct[index] = DirectTemplate::plan(&template, &written);
        self.shapes[index] = Some(shape);
        if written.is_empty() {
            self.registry.register_template(&name, template);
        } else {
            // Two templates: one writing the values (delivery, test-fire), one the marker
            // (preview), each calling its own helper.
            for (redact, template_name) in [(false, name), (true, redacted_name(index))] {
                let helper = headers::helper_name(index, redact);
                let mut rewritten = template.clone();
                headers::rewrite(&mut rewritten, &helper);
                self.registry.register_helper(
                    &helper,
                    Box::new(HeaderHelper {
                        headers: written.clone(),
                        redact,
                    }),
                );
                self.registry.register_template(&template_name, rewritten);
            }
            self.headers[index] = written;
        }
        Ok(())
    }

    /// Whether trigger `index` renders by its direct plan: for the fuzz target that checks
    /// both paths agree (feature `__test-support`, unstable).
    #[cfg(any(test, feature = "__test-support"))]
    #[doc(hidden)]
    pub fn renders_directly(&self, index: usize) -> bool {
        matches!(self.direct.get(index), Some(Some(_)))
    }

    /// Renders trigger `index` against a context made by [`Templates::context`].
    pub fn render(&self, index: usize, context: &Json) -> Result<String, TemplateError> {
        let collections = context
            .get("collection_names")
            .and_then(Json::as_array)
            .map_or(0, Vec::len);
        self.render_data(index, context, collections, false)
    }

    fn render_data(
        &self,
        index: usize,
        data: &impl serde::Serialize,
        collections: usize,
        redact: bool,
    ) -> Result<String, TemplateError> {
        self.check_steps(index, collections)?;
        let context = Context::wraps(data).map_err(render_error)?;
        let mut out = BoundedWriter::default();
        let writes_headers = self.headers.get(index).is_some_and(|h| !h.is_empty());
        let template = if redact && writes_headers {
            redacted_name(index)
        } else {
            name(index)
        };
        match self
            .registry
            .render_with_context_to_write(&template, &context, &mut out)
        {
            Ok(()) => String::from_utf8(out.bytes).map_err(|err| TemplateError::Render {
                line: 0,
                column: 0,
                message: err.to_string(),
            }),
            Err(_) if out.exceeded => Err(TemplateError::PayloadTooLarge {
                max: MAX_PAYLOAD_BYTES,
            }),
            Err(err) => Err(render_error(err)),
        }
    }

    /// Refuses a render whose `#each` bodies, times this transaction's collections, are
    /// more steps than [`MAX_RENDER_STEPS`].
    fn check_steps(&self, index: usize, collections: usize) -> Result<(), TemplateError> {
        if let Some(Some(shape)) = self.shapes.get(index) {
            let steps = shape.steps(collections);
            if steps > MAX_RENDER_STEPS {
                return Err(TemplateError::TooMuchWork {
                    steps,
                    max: MAX_RENDER_STEPS,
                    collections,
                });
            }
        }
        Ok(())
    }

    /// Renders trigger `index` for a transaction: its variables plus the trigger's
    /// `webhook_id`, serialised once per render (as bare Handlebars would). Validation's
    /// trial render and delivery both come here, so publish time checks the path that
    /// runs in production, with the same bounds.
    ///
    /// `headers.<Name>` writes the header's value (no helper ever sees one, so no error
    /// can show it).
    pub fn render_variables(
        &self,
        index: usize,
        variables: &Variables,
        webhook_id: &str,
    ) -> Result<String, TemplateError> {
        self.render_with_headers(index, variables, webhook_id, false)
    }

    /// [`Templates::render_variables`] writing [`REDACTED_HEADER_VALUE`] for every
    /// header value: what a preview shows.
    pub fn render_redacted(
        &self,
        index: usize,
        variables: &Variables,
        webhook_id: &str,
    ) -> Result<String, TemplateError> {
        self.render_with_headers(index, variables, webhook_id, true)
    }

    fn render_with_headers(
        &self,
        index: usize,
        variables: &Variables,
        webhook_id: &str,
        redact: bool,
    ) -> Result<String, TemplateError> {
        let empty = TemplateHeaders::default();
        let headers = self.headers.get(index).unwrap_or(&empty);
        if let Some(Some(direct)) = self.direct.get(index) {
            match direct.render(variables, webhook_id, headers, redact, MAX_PAYLOAD_BYTES) {
                Ok(rendered) => return Ok(rendered),
                Err(DirectFailure::TooLarge) => {
                    return Err(TemplateError::PayloadTooLarge {
                        max: MAX_PAYLOAD_BYTES,
                    });
                }
                // Handlebars reports what it cannot write.
                Err(DirectFailure::Unrepresentable) => {}
            }
        }
        self.render_data(
            index,
            &TriggerVariables {
                variables,
                webhook_id,
            },
            variables.collection_names.len(),
            redact,
        )
    }

    /// A transaction's variables as a JSON context, for [`Templates::render`] (tests and
    /// fuzzing render arbitrary contexts; it carries no `webhook_id`).
    pub fn context(variables: &Variables) -> Json {
        // Infallible in practice (strings, a list of strings, formatted times); a failure
        // would yield a context every template fails against, not a panic.
        serde_json::to_value(variables).unwrap_or_default()
    }
}

/// A render's output, refusing to grow past [`MAX_PAYLOAD_BYTES`].
#[derive(Default)]
struct BoundedWriter {
    bytes: Vec<u8>,
    /// Set when a write was refused: the render failed for its size.
    exceeded: bool,
}

impl std::io::Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_PAYLOAD_BYTES {
            self.exceeded = true;
            return Err(std::io::Error::other("the payload budget is spent"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A Handlebars render error as ours.
fn render_error(err: RenderError) -> TemplateError {
    let line = err.line_no.unwrap_or(0);
    let column = err.column_no.unwrap_or(0);
    match err.reason() {
        // Strict mode reports a missing *result* (`lookup` past the end of a list)
        // as a variable with no name: say what happened instead.
        RenderErrorReason::MissingVariable(path) if path.as_deref().is_none_or(str::is_empty) => {
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

/// The preview's copy of trigger `index`'s template, for one that writes headers.
fn redacted_name(index: usize) -> String {
    format!("trigger[{index}]:redacted")
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

/// `eq` and `ne` of two strings, numbers, booleans or nulls. The built-in ones compare
/// lists too, which inside an `#each` costs collections² with nothing written.
struct ScalarEq {
    equal: bool,
}

impl HelperDef for ScalarEq {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let name = if self.equal { "eq" } else { "ne" };
        let mut values = [&Json::Null, &Json::Null];
        for (position, value) in values.iter_mut().enumerate() {
            let param = h
                .param(position)
                .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, position))?;
            require_present(param)?;
            if matches!(param.value(), Json::Array(_) | Json::Object(_)) {
                return Err(RenderErrorReason::Other(format!(
                    "`{name}` compares strings, numbers and booleans, not lists or objects"
                ))
                .into());
            }
            *value = param.value();
        }
        Ok(ScopedJson::Derived(Json::Bool(
            (values[0] == values[1]) == self.equal,
        )))
    }
}

/// `lookup list index` and `lookup object key`, giving the value itself rather than the
/// built-in's copy of it: `(lookup @root "collection_names")` inside an `#each` would
/// copy the whole list once per collection.
struct Lookup;

impl HelperDef for Lookup {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let collection = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("lookup", 0))?;
        let key = h
            .param(1)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("lookup", 1))?;
        require_present(collection)?;
        require_present(key)?;
        let key = match (collection.value(), key.value()) {
            (Json::Array(items), Json::Number(n)) => n
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i < items.len())
                .map(|i| i.to_string()),
            (Json::Object(entries), Json::String(k)) if entries.contains_key(k) => Some(k.clone()),
            _ => None,
        }
        .ok_or_else(|| RenderError::strict_error(None))?;
        // Borrow from the context where the collection lives there.
        if let Some(path) = collection.context_path()
            && let Some(value) = path
                .iter()
                .chain(std::iter::once(&key))
                .try_fold(ctx.data(), child)
        {
            let mut path = path.clone();
            path.push(key);
            return Ok(ScopedJson::Context(value, path));
        }
        // A literal or a block parameter's copy: only a scalar is copied out.
        match child(collection.value(), &key) {
            Some(Json::Array(_) | Json::Object(_)) => Err(RenderErrorReason::Other(
                "`lookup` of a literal must give a string, number or boolean".to_string(),
            )
            .into()),
            Some(value) => Ok(ScopedJson::Derived(value.clone())),
            None => Err(RenderError::strict_error(None)),
        }
    }
}

/// The member `key` of a list (by index) or an object.
fn child<'a>(value: &'a Json, key: &String) -> Option<&'a Json> {
    match value {
        Json::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        Json::Object(entries) => entries.get(key),
        _ => None,
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

    /// Issue 12 (a config that validates never stalls a shard): an unknown variable in a
    /// branch the trial render does not take passed validation, then failed for good at
    /// delivery on the transaction that took it, stopping the shard.
    #[test]
    fn an_unknown_variable_in_a_branch_the_trial_render_skips_is_refused_at_validation() {
        for source in [
            "{{#unless materialization_name}}{{nope}}{{/unless}}",
            "{{#if (eq transaction_count 999)}}{{json nope}}{{/if}}",
            "{{#each collection_names}}{{this}}{{else}}{{nope.more}}{{/each}}",
            "{{#with materialization_name}}{{this}}{{else}}{{nope}}{{/with}}",
            "{{#if (eq transaction_count 999)}}{{lookup nope 0}}{{/if}}",
        ] {
            let Err(err) = compile(source) else {
                panic!("{source} compiled");
            };
            assert!(
                matches!(&err, TemplateError::UnknownVariable { variable, .. } if variable.starts_with("nope")),
                "{source}: {err:?}"
            );
        }
        // Other contexts and the paths the walk cannot judge are left to the trial render.
        for source in [
            "{{#each collection_names}}{{this}}{{@index}}{{@first}}{{/each}}",
            "{{#with materialization_name}}{{this}}{{/with}}",
            "{{@root.materialization_name}}{{lookup collection_names 0}}",
            "{{#if transaction_count}}{{json collection_names}}{{/if}}",
        ] {
            if let Err(err) = compile(source) {
                panic!("{source}: {err:?}");
            }
        }
    }

    #[test]
    fn templates_with_unknown_variables_have_no_direct_plan() {
        let mut templates = Templates::new();
        // An unknown variable no longer compiles at all, so it never gets a plan.
        assert!(matches!(
            templates.compile(0, "{{materialisation_name}}"),
            Err(TemplateError::UnknownVariable { .. })
        ));
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

    fn compile(source: &str) -> Result<Templates, TemplateError> {
        let mut templates = Templates::new();
        templates.compile(0, source)?;
        Ok(templates)
    }

    /// Issue 12: 800 nested `#if` passed validation on the 8 MiB main thread, then
    /// overflowed a 2 MiB worker's stack at the first delivery.
    #[test]
    fn eight_hundred_nested_if_blocks_are_refused_at_validation() {
        let source = format!(
            "{}{{}}{}",
            "{{#if materialization_name}}".repeat(800),
            "{{/if}}".repeat(800)
        );
        assert!(source.len() < 35_000);
        let err = compile(&source).err().expect("too deep");
        assert!(
            matches!(
                err,
                TemplateError::TooDeep {
                    max: MAX_TEMPLATE_NESTING,
                    line: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        // Ten thousand, which took 9.5 s and aborted `triggers validate`, likewise.
        let source = format!("{}{}", "{{#if a}}".repeat(10_000), "{{/if}}".repeat(10_000));
        assert!(matches!(
            compile(&source).err(),
            Some(TemplateError::TooLarge { .. } | TemplateError::TooManyExpressions { .. })
        ));
        let source = format!("{}{}", "{{#if a}}".repeat(17), "{{/if}}".repeat(17));
        assert!(matches!(
            compile(&source).err(),
            Some(TemplateError::TooDeep { .. })
        ));
        // `else if` chains and subexpressions are levels of recursion too.
        let chain = format!(
            "{{{{#if flow_run_id}}}}{}{{{{/if}}}}",
            "{{else if flow_run_id}}".repeat(MAX_TEMPLATE_NESTING)
        );
        assert!(matches!(
            compile(&chain).err(),
            Some(TemplateError::TooDeep { .. })
        ));
        let parens = format!(
            "{{{{json {}materialization_name{}}}}}",
            "(lookup ".repeat(20),
            " 0)".repeat(20)
        );
        assert!(matches!(
            compile(&parens).err(),
            Some(TemplateError::TooDeep { .. })
        ));
    }

    /// The deepest template allowed renders on a stack far smaller than a tokio
    /// worker's 2 MiB, by Handlebars and through validation alike.
    #[test]
    fn the_deepest_allowed_template_renders_on_a_small_stack() {
        // Blocks to two levels short of the bound, then two levels of subexpressions.
        let pairs = (MAX_TEMPLATE_NESTING - 2) / 2;
        let source = format!(
            "[{}{}{}]",
            "{{#with this}}{{#if materialization_name}}".repeat(pairs),
            "{{json (lookup (lookup this \"collection_names\") 0)}}",
            "{{/if}}{{/with}}".repeat(pairs)
        );
        let config = serde_json::json!({"config": [{"url": "https://x.example.com", "payloadTemplate": source}]})
            .to_string();
        let rendered = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let triggers = crate::validate(&config, crate::ConfigFormat::Json)
                    .expect("valid at the bound");
                let variables = Variables::placeholder();
                triggers.render(0, &variables, "msg_0")
            })
            .expect("spawns")
            .join()
            .expect("no stack overflow");
        assert_eq!(
            rendered.expect("renders"),
            "[\"acmeCo/example/collection-a\"]"
        );
        // And it is the deepest: one more level is refused.
        let deeper = format!(
            "{{{{#if flow_run_id}}}}{}{{{{/if}}}}",
            "{{#with this}}{{#if materialization_name}}".repeat(pairs)
                + "{{json (lookup (lookup this \"collection_names\") 0)}}"
                + &"{{/if}}{{/with}}".repeat(pairs)
        );
        assert!(matches!(
            compile(&deeper).err(),
            Some(TemplateError::TooDeep { .. })
        ));
    }

    /// Issue 12: a 120-byte recursive inline partial aborted `triggers validate`.
    #[test]
    fn a_recursive_inline_partial_is_refused() {
        for source in [
            r#"{{#*inline "p"}}{{> p}}{{/inline}}{{> p}}"#,
            "{{> other}}",
            "{{#> layout}}x{{/layout}}",
            "{{*decorator}}",
        ] {
            let err = compile(source).err().expect(source);
            assert!(
                matches!(err, TemplateError::Unsupported { .. }),
                "{source}: {err:?}"
            );
        }
    }

    /// Issue 12: nested `#each @root.collection_names` cost 2^depth at validation and
    /// n^depth at delivery.
    #[test]
    fn nested_each_over_collection_names_is_refused() {
        let source = format!(
            "{}x{}",
            "{{#each @root.collection_names}}".repeat(2),
            "{{/each}}".repeat(2)
        );
        assert!(matches!(
            compile(&source).err(),
            Some(TemplateError::NestedEach {
                line: 1,
                column: 33
            })
        ));
        let hidden =
            "{{#each collection_names}}{{#with @root}}{{#each this}}x{{/each}}{{/with}}{{/each}}";
        assert!(matches!(
            compile(hidden).err(),
            Some(TemplateError::NestedEach { .. })
        ));
        // One level, and siblings, are fine.
        compile("{{#each collection_names}}{{this}}{{/each}}{{#each @root}}{{@key}}{{/each}}")
            .expect("one level");
    }

    /// Issue 12: compile time grew with the square of the expressions (20k: 7.6 s; a
    /// 9.6 MB template did not finish in a minute).
    #[test]
    fn many_expressions_and_long_templates_are_refused_before_compiling() {
        let many = "{{flow_run_id}}".repeat(MAX_EXPRESSIONS + 1);
        assert!(many.len() < MAX_TEMPLATE_BYTES);
        assert_eq!(
            compile(&many).err(),
            Some(TemplateError::TooManyExpressions {
                max: MAX_EXPRESSIONS
            })
        );
        let long = "x".repeat(9_600_000);
        assert_eq!(
            compile(&long).err(),
            Some(TemplateError::TooLarge {
                bytes: 9_600_000,
                max: MAX_TEMPLATE_BYTES
            })
        );
        // Subexpressions count as expressions too.
        let subexpressions = format!("{{{{and {}}}}}", "(not 1) ".repeat(MAX_EXPRESSIONS));
        assert!(matches!(
            compile(&subexpressions).err(),
            Some(TemplateError::TooManyExpressions { .. })
        ));
        compile(&"{{flow_run_id}}".repeat(MAX_EXPRESSIONS)).expect("at the bound");
    }

    /// The output budget holds in delivery's render, by the direct plan and by
    /// Handlebars alike.
    #[test]
    fn rendered_output_is_bounded_at_delivery() {
        let mut variables = Variables::placeholder();
        variables.collection_names = (0..20_000).map(|i| format!("acmeCo/c{i:05}")).collect();
        for source in [
            "{{json collection_names}}",
            "{{collection_names}}",
            "[{{#each collection_names}}{{json this}},{{/each}}]",
            "{{#if collection_names}}{{json collection_names}}{{/if}}",
        ] {
            let templates = compile(source).expect(source);
            assert_eq!(
                templates.render_variables(0, &variables, "msg_0"),
                Err(TemplateError::PayloadTooLarge {
                    max: MAX_PAYLOAD_BYTES
                }),
                "{source}"
            );
        }
        variables.collection_names.truncate(10);
        let templates = compile("{{json collection_names}}").expect("compiles");
        assert!(templates.render_variables(0, &variables, "msg_0").is_ok());
    }

    /// An `#each` body costs its expressions once per collection: past the step budget a
    /// render is refused before it starts.
    #[test]
    fn render_steps_are_bounded_for_any_number_of_collections() {
        let body = "{{#if this}}{{/if}}".repeat(100);
        let templates = compile(&format!(
            "{{{{#each collection_names}}}}{body}{{{{/each}}}}"
        ))
        .expect("compiles");
        let mut variables = Variables::placeholder();
        variables.collection_names = vec![String::new(); 100_000];
        let err = templates
            .render_variables(0, &variables, "msg_0")
            .expect_err("too much work");
        assert!(
            matches!(
                err,
                TemplateError::TooMuchWork {
                    collections: 100_000,
                    max: MAX_RENDER_STEPS,
                    ..
                }
            ),
            "{err:?}"
        );
        variables.collection_names.truncate(1000);
        assert_eq!(
            templates.render_variables(0, &variables, "msg_0"),
            Ok(String::new())
        );
    }

    /// Helpers that would write to the log or walk whole lists are not available, even in
    /// a branch the trial render does not take.
    #[test]
    fn only_bounded_helpers_are_available() {
        for source in [
            "{{#if false}}{{log materialization_name}}{{/if}}",
            "{{#if false}}{{gt transaction_count 1}}{{/if}}",
            "{{{{raw}}}}x{{{{/raw}}}}",
            "{{shout connector_image}}",
            "{{#each collection_names}}{{len ../collection_names}}{{/each}}",
        ] {
            let err = compile(source).err().expect(source);
            assert!(
                matches!(err, TemplateError::UnknownHelper { .. }),
                "{source}: {err:?}"
            );
        }
        let out = render(
            "{{#if (eq transaction_count 3)}}three{{/if}} {{ne flow_run_id \"x\"}} \
             {{#if (and collection_names (not (eq first_commit_seq 0)))}}and{{/if}} \
             {{json (lookup this \"collection_names\")}}",
        )
        .expect("renders");
        assert_eq!(
            out,
            "three true and [\"acmeCo/example/collection-a\",\"acmeCo/example/collection-b\"]"
        );
        let err = render("{{eq collection_names collection_names}}").expect_err("lists");
        assert!(matches!(err, TemplateError::Render { .. }), "{err:?}");
    }

    /// A trigger's headers, as a config gives them.
    fn headers(entries: &[(&str, &str)]) -> std::collections::BTreeMap<String, Secret> {
        entries
            .iter()
            .map(|(name, value)| (name.to_string(), Secret::new(*value)))
            .collect()
    }

    /// Compiles `source` as trigger 0 with `entries` as its headers.
    fn compile_headers(source: &str, entries: &[(&str, &str)]) -> Result<Templates, TemplateError> {
        let mut templates = Templates::new();
        templates.compile_with_headers(0, source, &headers(entries))?;
        Ok(templates)
    }

    /// Issue 18, item 3b: `{{headers.Name}}` writes the trigger's header value, by the
    /// direct plan and by Handlebars alike (byte for byte), with the JSON escaping each
    /// already gives strings; a preview writes the marker instead.
    #[test]
    fn headers_name_renders_the_configured_value_by_both_paths_with_json_escaping() {
        let entries = [
            ("X-Api-Key", "sk \"quoted\"\nline\\ \u{1F600}"),
            ("Authorization", "Bearer t0ken"),
        ];
        let variables = Variables::placeholder();
        for (direct, handlebars) in [
            (
                "{{headers.X-Api-Key}}",
                "{{#if true}}{{headers.X-Api-Key}}{{/if}}",
            ),
            (
                "{{json headers.X-Api-Key}}",
                "{{#if true}}{{json headers.X-Api-Key}}{{/if}}",
            ),
            (
                "{\"k\": {{json this.headers.X-Api-Key}}, \"a\": \"{{headers.Authorization}}\"}",
                "{\"k\": {{json @root.headers.X-Api-Key}}, \"a\": \"{{#each collection_names}}{{#if @first}}{{@root.headers.Authorization}}{{/if}}{{/each}}\"}",
            ),
        ] {
            let fast = compile_headers(direct, &entries).expect(direct);
            assert!(fast.renders_directly(0), "{direct}");
            let slow = compile_headers(handlebars, &entries).expect(handlebars);
            assert!(!slow.renders_directly(0), "{handlebars}");
            let ours = fast.render_variables(0, &variables, "msg_0").expect(direct);
            assert_eq!(
                ours,
                slow.render_variables(0, &variables, "msg_0")
                    .expect(handlebars)
            );
            assert_eq!(
                fast.render_redacted(0, &variables, "msg_0"),
                slow.render_redacted(0, &variables, "msg_0")
            );
            let redacted = fast.render_redacted(0, &variables, "msg_0").expect(direct);
            assert!(redacted.contains(REDACTED_HEADER_VALUE), "{redacted}");
            assert!(
                !redacted.contains("sk ") && !redacted.contains("t0ken"),
                "{redacted}"
            );
        }
        let templates = compile_headers("{{json headers.X-Api-Key}}", &entries).expect("compiles");
        let out = templates
            .render_variables(0, &variables, "msg_0")
            .expect("renders");
        assert_eq!(
            serde_json::from_str::<String>(&out).expect("a JSON string"),
            entries[0].1
        );
        let plain = compile_headers("{{headers.Authorization}}", &entries).expect("compiles");
        assert_eq!(
            plain.render_variables(0, &variables, "msg_0").as_deref(),
            Ok("Bearer t0ken")
        );
    }

    /// Issue 18, item 3b: a header the trigger does not have is refused when the template
    /// compiles (any branch, case as configured), listing the trigger's header names and
    /// never a value; `headers` alone or with more than one name after it too.
    #[test]
    fn a_header_the_trigger_does_not_have_is_refused_listing_its_header_names() {
        let entries = [
            ("X-Api-Key", "sk-unit-secret"),
            ("Authorization", "Bearer t0ken"),
        ];
        for (source, path) in [
            ("{\n \"k\": \"{{headers.Nope}}\"}", "headers.Nope"),
            ("{\n \"k\": \"{{headers.x-api-key}}\"}", "headers.x-api-key"),
            ("{\n \"k\": {{json headers}}}", "headers"),
            (
                "{\n \"k\": \"{{headers.X-Api-Key.more}}\"}",
                "headers.X-Api-Key.more",
            ),
            (
                "{\n \"k\": {{#if false}}{{headers.Nope}}{{/if}}}",
                "headers.Nope",
            ),
            ("{\n \"k\": {{#each headers}}{{this}}{{/each}}}", "headers"),
        ] {
            let err = compile_headers(source, &entries).err().expect(source);
            let TemplateError::UnknownHeader {
                path: found,
                line: 2,
                headers,
                ..
            } = &err
            else {
                panic!("{source}: {err:?}");
            };
            assert_eq!(found, path, "{source}");
            assert_eq!(headers, &["Authorization", "X-Api-Key"], "{source}");
            let text = err.to_string();
            assert!(
                text.contains("its headers are: Authorization, X-Api-Key"),
                "{text}"
            );
            assert!(
                !text.contains("sk-unit-secret") && !text.contains("t0ken"),
                "{text}"
            );
            assert!(!format!("{err:?}").contains("sk-unit-secret"));
        }
        let err = compile("{{headers.Authorization}}")
            .err()
            .expect("no headers");
        assert_eq!(
            err.to_string(),
            "`headers.Authorization` at line 1, column 1 names no header of this trigger; it has no `headers`"
        );
    }

    /// Issue 18, item 3b: `-` is a path character, so Flow's `{{headers.X-Api-Key}}` works
    /// as written; a name with `.` or another character Handlebars paths cannot hold is
    /// written in brackets, and the dotted spelling is refused saying so.
    #[test]
    fn header_names_beyond_path_characters_are_written_in_brackets() {
        let entries = [
            ("X.Key", "dotted"),
            ("X!Key", "bang"),
            ("X$Key_2", "dollar"),
            ("X-Api-Key", "dash"),
        ];
        let templates = compile_headers(
            "{{headers.[X.Key]}} {{headers.[X!Key]}} {{headers.X$Key_2}} {{headers.X-Api-Key}} {{json headers.[X.Key]}}",
            &entries,
        )
        .expect("compiles");
        assert!(templates.renders_directly(0));
        assert_eq!(
            templates
                .render_variables(0, &Variables::placeholder(), "msg_0")
                .as_deref(),
            Ok("dotted bang dollar dash \"dotted\"")
        );
        for (source, name, column) in [
            ("{{headers.X.Key}}", "X.Key", 1),
            ("{\"k\": \"{{headers.X!Key}}\"}", "X!Key", 8),
            ("{{#if true}}\n {{json headers.X.Key}}{{/if}}", "X.Key", 2),
        ] {
            let err = compile_headers(source, &entries).err().expect(source);
            let line = 1 + usize::from(source.contains('\n'));
            assert_eq!(
                err,
                TemplateError::HeaderNeedsBrackets {
                    name: name.to_string(),
                    line,
                    column
                },
                "{source}"
            );
            assert!(
                err.to_string()
                    .ends_with(&format!("write it in brackets, `headers.[{name}]`")),
                "{err}"
            );
        }
        // Outside a mustache it is text, and so is a string literal in a template that
        // compiles.
        compile_headers("headers.X.Key {{headers.[X.Key]}}", &entries).expect("text");
        compile_headers(
            r#"{{#if (eq materialization_name "headers.X.Key")}}x{{/if}}"#,
            &entries,
        )
        .expect("a literal");
        let err = compile_headers("{{headers.X}}", &[("X.Key", "dotted")])
            .err()
            .expect("no header X");
        assert!(err.to_string().contains("`headers.[X.Key]`"), "{err}");
    }

    /// Issue 18, item 3b: a header can only be written into the payload. As a helper's or
    /// block's argument (where an error could quote it: `timestamp` quotes the value it
    /// was given), or by a path that does not reach the root, it is refused when the
    /// template compiles, and the error never shows the value.
    #[test]
    fn a_header_used_other_than_written_is_refused_at_compile() {
        let secret = "sk-distinctive-9f3a";
        for source in [
            "{{timestamp headers.X-Api-Key \"us\"}}",
            "{{json (timestamp headers.X-Api-Key \"us\")}}",
            "{{#if headers.X-Api-Key}}x{{/if}}",
            "{{#unless false}}{{eq headers.X-Api-Key \"a\"}}{{/unless}}",
            "{{#with headers.X-Api-Key}}{{this}}{{/with}}",
            "{{#each collection_names}}{{headers.X-Api-Key}}{{/each}}",
            "{{#each collection_names}}{{../headers.X-Api-Key}}{{/each}}",
            "{{#each collection_names}}{{timestamp @root.headers.X-Api-Key \"s\"}}{{/each}}",
            "{{json headers.X-Api-Key pretty=true}}",
        ] {
            let err = compile_headers(source, &[("X-Api-Key", secret)])
                .err()
                .expect(source);
            assert!(
                matches!(&err, TemplateError::HeaderUse { path, line: 1, .. } if path.contains("headers.X-Api-Key")),
                "{source}: {err:?}"
            );
            let (text, debug) = (err.to_string(), format!("{err:?}"));
            assert!(!text.contains(secret) && !debug.contains(secret), "{text}");
            assert!(
                text.contains("can only be written into the payload"),
                "{text}"
            );
        }
    }

    /// Issue 18, item 3b: header values never enter the render's context, so no path,
    /// `lookup` or `#each` reaches one (and no helper's error can quote one): templates
    /// see the variables exactly as before, and only `headers.<Name>` writes a value.
    #[test]
    fn header_values_never_enter_the_render_context() {
        let entries = [("A", "alpha-secret"), ("B", "beta-secret")];
        let variables = Variables::placeholder();
        let keys = "{{#each this}}{{@key}},{{/each}}";
        let before = compile(keys).expect("compiles");
        let writes =
            compile_headers(&format!("{keys}{{{{headers.A}}}}"), &entries).expect("compiles");
        let listed = before
            .render_variables(0, &variables, "msg_0")
            .expect("renders");
        assert_eq!(
            writes.render_variables(0, &variables, "msg_0"),
            Ok(format!("{listed}alpha-secret"))
        );
        let dump = "{{#each this}}{{json this}}{{/each}}{{headers.A}}";
        let out = compile_headers(dump, &entries)
            .expect("compiles")
            .render_variables(0, &variables, "msg_0")
            .expect("renders");
        assert_eq!(out.matches("alpha-secret").count(), 1, "{out}");
        assert!(!out.contains("beta-secret"), "{out}");
        for source in [
            "{{headers.A}}{{json (lookup this \"headers\")}}",
            "{{headers.A}}{{#each collection_names}}{{json (lookup @root \"headers\")}}{{/each}}",
        ] {
            let templates = compile_headers(source, &entries).expect(source);
            for redact in [false, true] {
                let err = templates
                    .render_with_headers(0, &variables, "msg_0", redact)
                    .expect_err(source);
                assert!(!format!("{err:?}").contains("secret"), "{source}: {err:?}");
            }
        }
    }

    /// Renders `{{timestamp "<value>" <args>}}`.
    fn timestamp(value: &str, args: &str) -> Result<String, TemplateError> {
        render(&format!("{{{{timestamp \"{value}\" {args}}}}}"))
    }

    /// Issue 13, item 4: publish times at a chosen precision, rounded down or up.
    #[test]
    fn timestamp_writes_publish_times_at_each_precision_floor_and_ceil() {
        let at = "2024-01-01T00:05:00.7654321Z";
        for (args, expect) in [
            (r#""s""#, "2024-01-01T00:05:00Z"),
            (r#""s" "floor""#, "2024-01-01T00:05:00Z"),
            (r#""s" "ceil""#, "2024-01-01T00:05:01Z"),
            (r#""ms""#, "2024-01-01T00:05:00.765Z"),
            (r#""ms" "ceil""#, "2024-01-01T00:05:00.766Z"),
            (r#""us""#, "2024-01-01T00:05:00.765432Z"),
            (r#""us" "ceil""#, "2024-01-01T00:05:00.765433Z"),
            (r#""100ns""#, "2024-01-01T00:05:00.7654321Z"),
            (r#""100ns" "ceil""#, "2024-01-01T00:05:00.7654321Z"),
        ] {
            assert_eq!(timestamp(at, args).as_deref(), Ok(expect), "{args}");
        }
        // A value already exact at the precision is the same either way, zeros written out.
        for (value, args, expect) in [
            (
                "2024-01-01T00:05:00.765Z",
                r#""ms" "ceil""#,
                "2024-01-01T00:05:00.765Z",
            ),
            (
                "2024-01-01T00:05:00.765Z",
                r#""us" "ceil""#,
                "2024-01-01T00:05:00.765000Z",
            ),
            (
                "2024-01-01T00:05:00.765Z",
                r#""100ns""#,
                "2024-01-01T00:05:00.7650000Z",
            ),
            (
                "2024-01-01T00:05:00Z",
                r#""s" "ceil""#,
                "2024-01-01T00:05:00Z",
            ),
            (
                "2024-01-01T00:05:00Z",
                r#""us" "ceil""#,
                "2024-01-01T00:05:00.000000Z",
            ),
            // Nanoseconds past the variables' 100 ns are rounded too.
            (
                "2024-01-01T00:05:00.123456789Z",
                r#""100ns""#,
                "2024-01-01T00:05:00.1234567Z",
            ),
            (
                "2024-01-01T00:05:00.123456789Z",
                r#""100ns" "ceil""#,
                "2024-01-01T00:05:00.1234568Z",
            ),
            // Written in UTC whatever the offset, as the variables are.
            (
                "2024-01-01T01:05:00.5+01:00",
                r#""ms""#,
                "2024-01-01T00:05:00.500Z",
            ),
            (
                "2023-12-31T19:05:00.5-04:55",
                r#""s" "ceil""#,
                "2024-01-01T00:00:01Z",
            ),
        ] {
            assert_eq!(
                timestamp(value, args).as_deref(),
                Ok(expect),
                "{value} {args}"
            );
        }
        // The variables themselves, and as a subexpression (a string for `json`).
        assert_eq!(
            render(
                r#"{"from": "{{timestamp flow_published_at_min "us"}}", "to": {{json (timestamp flow_published_at_max "us" "ceil")}}}"#
            )
            .as_deref(),
            Ok(r#"{"from": "2024-01-01T00:00:00.123456Z", "to": "2024-01-01T00:05:00.765433Z"}"#)
        );
    }

    /// Issue 13, item 4: a ceil at the last 100 ns of a day is the next day's midnight.
    #[test]
    fn timestamp_ceil_rolls_over_a_second_boundary_into_the_next_day() {
        let last = "2024-12-31T23:59:59.9999999Z";
        for (args, expect) in [
            (r#""s" "ceil""#, "2025-01-01T00:00:00Z"),
            (r#""ms" "ceil""#, "2025-01-01T00:00:00.000Z"),
            (r#""us" "ceil""#, "2025-01-01T00:00:00.000000Z"),
            (r#""100ns" "ceil""#, "2024-12-31T23:59:59.9999999Z"),
            (r#""us""#, "2024-12-31T23:59:59.999999Z"),
            (r#""s""#, "2024-12-31T23:59:59Z"),
        ] {
            assert_eq!(timestamp(last, args).as_deref(), Ok(expect), "{args}");
        }
        // A leap day, and a leap second (read as the last instant of its minute).
        assert_eq!(
            timestamp("2024-02-28T23:59:59.5Z", r#""s" "ceil""#).as_deref(),
            Ok("2024-02-29T00:00:00Z")
        );
        assert_eq!(
            timestamp("2016-12-31T23:59:60.5Z", r#""ms" "ceil""#).as_deref(),
            Ok("2017-01-01T00:00:00.000Z")
        );
    }

    /// Issue 13, item 4: literal arguments the helper cannot take are refused when the
    /// template compiles (validation), with their position.
    #[test]
    fn timestamp_bad_literal_arguments_are_refused_at_compile_with_their_position() {
        for source in [
            r#"{{timestamp flow_published_at_max "ns"}}"#,
            r#"{{timestamp flow_published_at_max "US"}}"#,
            r#"{{timestamp flow_published_at_max 3}}"#,
            r#"{{timestamp flow_published_at_max "us" "round"}}"#,
            r#"{{timestamp flow_published_at_max "us" true}}"#,
            r#"{{timestamp flow_published_at_max}}"#,
            r#"{{timestamp}}"#,
            r#"{{timestamp flow_published_at_max "us" "ceil" "floor"}}"#,
            r#"{{timestamp flow_published_at_max "us" rounding="ceil"}}"#,
            r#"{{json (timestamp flow_published_at_max "minutes")}}"#,
            r#"{{#if false}}{{timestamp flow_published_at_max "ns"}}{{/if}}"#,
        ] {
            let err = compile(&format!("{{\n  \"to\": {source}}}"))
                .err()
                .unwrap_or_else(|| panic!("{source} compiled"));
            let TemplateError::HelperArguments {
                helper: "timestamp",
                line: 2,
                column,
                ..
            } = &err
            else {
                panic!("{source}: {err:?}");
            };
            assert!(*column >= 9, "{source}: {err:?}");
            let text = err.to_string();
            assert!(
                text.contains("`timestamp`") && text.contains("line 2"),
                "{text}"
            );
        }
        // A precision or rounding that is not a literal is checked when it renders.
        let err = render(r#"{{timestamp flow_published_at_max materialization_name}}"#)
            .expect_err("not a precision");
        assert!(
            matches!(&err, TemplateError::Render { message, .. } if message.contains("`timestamp`")),
            "{err:?}"
        );
    }

    /// Issue 13, item 4: a value that is not an RFC 3339 timestamp fails the render,
    /// naming the helper; out-of-range values are errors too, never panics.
    #[test]
    fn timestamp_of_a_value_that_is_not_a_timestamp_is_a_render_error_naming_the_helper() {
        for source in [
            r#"{{timestamp materialization_name "us"}}"#,
            r#"{{timestamp transaction_count "us"}}"#,
            r#"{{timestamp collection_names "us"}}"#,
            r#"{{timestamp "2024-01-01" "us"}}"#,
            r#"{{timestamp "2024-01-01T00:05:00" "us"}}"#,
            r#"{{timestamp "2024-13-01T00:05:00Z" "s"}}"#,
            r#"{{timestamp "" "s"}}"#,
            // Past year 9999 once rounded up, or once moved to UTC.
            r#"{{timestamp "9999-12-31T23:59:59.5Z" "s" "ceil"}}"#,
            r#"{{timestamp "9999-12-31T23:59:59-23:59" "s"}}"#,
            r#"{{timestamp "0000-01-01T00:00:00+23:59" "s"}}"#,
        ] {
            let err = render(source).expect_err(source);
            assert!(
                matches!(&err, TemplateError::Render { message, line: 1, .. } if message.contains("`timestamp`")),
                "{source}: {err:?}"
            );
        }
        // The bounds of the range still render.
        assert_eq!(
            timestamp("9999-12-31T23:59:59.9999999Z", r#""us""#).as_deref(),
            Ok("9999-12-31T23:59:59.999999Z")
        );
        assert_eq!(
            timestamp("0000-01-01T00:00:00Z", r#""ms""#).as_deref(),
            Ok("0000-01-01T00:00:00.000Z")
        );
        assert!(matches!(
            render(r#"{{timestamp nope "us"}}"#),
            Err(TemplateError::UnknownVariable { .. })
        ));
    }

    /// The fuzz target's `timestamp` invariant, on random times: at each precision the
    /// floor and the ceil bracket the time, less than one unit from it, equal exactly
    /// when the time is whole in that unit.
    #[test]
    fn timestamp_brackets_random_times_between_floor_and_ceil() {
        use time::format_description::well_known::Rfc3339;
        let templates = compile(
            r#"{{timestamp flow_published_at_max "s"}} {{timestamp flow_published_at_max "s" "ceil"}} {{timestamp flow_published_at_max "ms"}} {{timestamp flow_published_at_max "ms" "ceil"}} {{timestamp flow_published_at_max "us"}} {{timestamp flow_published_at_max "us" "ceil"}} {{timestamp flow_published_at_max "100ns"}} {{timestamp flow_published_at_max "100ns" "ceil"}}"#,
        )
        .expect("compiles");
        let mut rng = fastrand::Rng::with_seed(13);
        for round in 0..2000 {
            // Whole units now and then, so the equal case is met at every precision.
            let nanos = match round % 5 {
                0 => 0,
                1 => rng.u32(0..1000) * 1_000_000,
                2 => rng.u32(0..1_000_000) * 1000,
                3 => rng.u32(0..10_000_000) * 100,
                _ => rng.u32(0..1_000_000_000),
            };
            let at = time::OffsetDateTime::from_unix_timestamp(
                rng.i64(-62_000_000_000..253_000_000_000),
            )
            .expect("in range")
            .replace_nanosecond(nanos)
            .expect("below a second");
            let variables = Variables {
                flow_published_at_max: at,
                ..Variables::placeholder()
            };
            let out = templates
                .render_variables(0, &variables, "msg_0")
                .unwrap_or_else(|err| panic!("{at}: {err}"));
            let parsed: Vec<time::OffsetDateTime> = out
                .split(' ')
                .map(|text| time::OffsetDateTime::parse(text, &Rfc3339).expect(text))
                .collect();
            for (pair, unit_ns) in
                parsed
                    .chunks_exact(2)
                    .zip([1_000_000_000i64, 1_000_000, 1_000, 100])
            {
                let (floor, ceil) = (pair[0], pair[1]);
                let unit = time::Duration::nanoseconds(unit_ns);
                assert!(
                    floor <= at && at <= ceil && at - floor < unit,
                    "{at}: {out}"
                );
                let whole = i64::from(at.nanosecond()) % unit_ns == 0;
                let apart = if whole { time::Duration::ZERO } else { unit };
                assert_eq!(ceil - floor, apart, "{at}: {out}");
            }
        }
    }
}
