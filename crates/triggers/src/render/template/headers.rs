//! `{{headers.Name}}`: a trigger's own header value written into its payload (Flow's way
//! of putting a secret in the body).
//!
//! The values never enter a render's JSON context, so no path, `lookup`, `#each` or
//! helper argument can reach one, and no helper's error can quote one: a template may
//! only *write* a header, as `{{headers.Name}}` or `{{json headers.Name}}` (or
//! `@root.headers.Name` inside a block that changes the context). The walk in
//! [`super::shape`] refuses every other use; [`rewrite`] then turns each of those
//! expressions into a call of a helper that holds the trigger's values and writes one,
//! and the direct plan writes them itself. A preview renders the same template with
//! helpers that write [`REDACTED_HEADER_VALUE`].

use crate::config::secret::Secret;
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, Path, PathSeg, RenderContext,
    RenderErrorReason,
};

/// What a preview writes in place of a header value (`{{headers.Name}}`): preview never
/// shows a secret.
pub const REDACTED_HEADER_VALUE: &str = "<redacted>";

/// The headers one template writes, in name order, with the trigger's values for them.
/// `Debug` shows names only: values are [`Secret`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TemplateHeaders {
    entries: Vec<(String, Secret)>,
}

impl TemplateHeaders {
    /// The headers named `names` (each one the trigger has), with the trigger's values.
    pub(crate) fn new<'a>(
        names: impl IntoIterator<Item = &'a String>,
        headers: &std::collections::BTreeMap<String, Secret>,
    ) -> Self {
        let mut entries: Vec<(String, Secret)> = names
            .into_iter()
            .filter_map(|n| headers.get_key_value(n))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        Self { entries }
    }

    /// The position of header `name` (as configured, case included).
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
    }

    /// The value a render writes for header `i`: the trigger's own, or the marker.
    pub(crate) fn value(&self, i: usize, redact: bool) -> &str {
        match self.entries.get(i) {
            Some(_) if redact => REDACTED_HEADER_VALUE,
            Some((_, value)) => value.expose(),
            None => "",
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The header a path names, if it is one: `headers.…` or `@root.headers.…` (any
/// segments after `headers`), with whether it goes through `@root` or `../`.
pub(crate) struct HeaderPath<'a> {
    /// The named segments after `headers`.
    pub(crate) rest: Vec<&'a str>,
    /// `@root.headers…`: the root whatever the context.
    pub(crate) rooted: bool,
    /// `../headers…`: a parent context.
    pub(crate) up: bool,
}

impl<'a> HeaderPath<'a> {
    /// `param` as a header path, if its first named segment is `headers`.
    pub(crate) fn of(param: &'a Parameter) -> Option<Self> {
        let Parameter::Path(Path::Relative((segments, raw))) = param else {
            return None;
        };
        let mut named = segments.iter().filter_map(|segment| match segment {
            PathSeg::Named(name) => Some(name.as_str()),
            _ => None,
        });
        if named.next() != Some("headers") {
            return None;
        }
        // The parser's rules are not public: `@root` is told by the text, any other rule
        // segment before `headers` is `../`.
        let ruled = segments
            .iter()
            .take_while(|segment| !matches!(segment, PathSeg::Named(_)))
            .count();
        let rooted = raw.starts_with("@root") && ruled == 1;
        let up = ruled > usize::from(rooted);
        Some(Self {
            rest: named.collect(),
            rooted,
            up,
        })
    }

    /// The one header name after `headers`, if there is exactly one.
    pub(crate) fn name(&self) -> Option<&'a str> {
        match self.rest.as_slice() {
            [name] => Some(name),
            _ => None,
        }
    }
}

/// The header an expression writes, and whether as JSON: `{{headers.Name}}` or
/// `{{json headers.Name}}` (the forms the walk allows; it checks where they are).
pub(crate) fn written_header(expression: &HelperTemplate) -> Option<(&Parameter, bool)> {
    if expression.block
        || expression.template.is_some()
        || expression.inverse.is_some()
        || !expression.hash.is_empty()
    {
        return None;
    }
    match (&expression.name, expression.params.as_slice()) {
        (path, []) if HeaderPath::of(path).is_some() => Some((path, false)),
        (Parameter::Name(helper), [path]) if helper == "json" && HeaderPath::of(path).is_some() => {
            Some((path, true))
        }
        _ => None,
    }
}

/// The helper that writes trigger `index`'s headers (or the marker, if `redact`).
pub(crate) fn helper_name(index: usize, redact: bool) -> String {
    if redact {
        format!("__trigger_header_redacted_{index}")
    } else {
        format!("__trigger_header_{index}")
    }
}

/// Turns every `{{headers.Name}}` and `{{json headers.Name}}` of `template` (blocks
/// included) into `{{HELPER "Name" json}}`, calling `helper`.
pub(crate) fn rewrite(template: &mut Template, helper: &str) {
    for element in &mut template.elements {
        match element {
            TemplateElement::Expression(expression)
            | TemplateElement::HtmlExpression(expression) => {
                let Some((path, json)) = written_header(expression) else {
                    continue;
                };
                let name = HeaderPath::of(path)
                    .and_then(|p| p.name())
                    .unwrap_or_default()
                    .to_string();
                expression.name = Parameter::Name(helper.to_string());
                expression.params = vec![
                    Parameter::Literal(serde_json::Value::String(name)),
                    Parameter::Literal(serde_json::Value::Bool(json)),
                ];
            }
            TemplateElement::HelperBlock(block) => {
                if let Some(body) = &mut block.template {
                    rewrite(body, helper);
                }
                if let Some(inverse) = &mut block.inverse {
                    rewrite(inverse, helper);
                }
            }
            _ => {}
        }
    }
}

/// Writes one of a trigger's headers: `{{HELPER "Name" json}}`, as [`rewrite`] makes it.
/// Its errors name the header, never the value.
pub(crate) struct HeaderHelper {
    pub(crate) headers: TemplateHeaders,
    pub(crate) redact: bool,
}

impl HelperDef for HeaderHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let name = h.param(0).and_then(|p| p.value().as_str()).unwrap_or("");
        let json = h
            .param(1)
            .and_then(|p| p.value().as_bool())
            .unwrap_or(false);
        let i = self.headers.position(name).ok_or_else(|| {
            RenderErrorReason::Other(format!("the trigger has no header {name:?}"))
        })?;
        let value = self.headers.value(i, self.redact);
        if json {
            let text = serde_json::to_string(value).map_err(RenderErrorReason::SerdeError)?;
            out.write(&text)?;
        } else {
            out.write(value)?;
        }
        Ok(())
    }
}

/// Whether Handlebars can read `name` as a path segment without brackets.
fn is_path_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'$'))
}

/// For a template that failed to compile or names no header: a header whose name has
/// characters a path cannot hold (`X.Key`, `X!Key`), written without brackets inside a
/// mustache, is the error, with the spelling that works (Handlebars says `expected
/// identifier`, or reads `headers.X.Key` as header `X`). Linear in the source, per such
/// header.
pub(crate) fn check_brackets(
    source: &str,
    headers: &std::collections::BTreeMap<String, Secret>,
) -> Result<(), super::TemplateError> {
    for name in headers
        .keys()
        .take(crate::config::document::MAX_HEADERS)
        .filter(|name| !name.is_empty() && !is_path_name(name))
    {
        let written = format!("headers.{name}");
        for (at, _) in source.match_indices(&written) {
            let before = &source[..at];
            // Inside a mustache: its `{{` is after the last `}}`.
            let Some(open) = before
                .rfind("{{")
                .filter(|open| before.rfind("}}").is_none_or(|close| close < *open))
            else {
                continue;
            };
            let before = &source[..open];
            let line = before.matches('\n').count() + 1;
            let column = open - before.rfind('\n').map_or(0, |nl| nl + 1) + 1;
            return Err(super::TemplateError::HeaderNeedsBrackets {
                name: name.chars().take(64).collect(),
                line,
                column,
            });
        }
    }
    Ok(())
}

/// What [`super::TemplateError::UnknownHeader`] says of the trigger's headers.
pub(crate) fn header_hint(headers: &[String]) -> String {
    if headers.is_empty() {
        return "it has no `headers`".to_string();
    }
    format!(
        "its headers are: {} (write `headers.` and one name, exactly as configured, case \
         included; a name with characters other than letters, digits, `-`, `_` and `$` \
         goes in brackets: `headers.[X.Key]`)",
        headers.join(", ")
    )
}
