//! The bounds of a template, checked before and after Handlebars compiles it, so every
//! render of a template that compiled is bounded in stack, time and output.
//!
//! Before compiling (Handlebars' compile time grows with the square of the number of
//! expressions, and its parser recurses into subexpressions): the source's length, its
//! count of `{{`, and how deep its blocks and parentheses nest, by a linear scan.
//!
//! After compiling, a walk of the template tree: nesting depth (blocks, `else if`
//! chains and subexpressions: each is a level of recursion when rendering), expressions,
//! helpers (only those below), no partials or decorators (a partial can include itself),
//! and no `#each` inside an `#each` (nested loops over `collection_names` cost n^depth).
//! It also counts the render's steps: with one level of `#each`, a render evaluates at
//! most `fixed + iterations × per_iteration` expressions.

use super::TemplateError;
use crate::config::secret::Secret;
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Path, PathSeg};
use std::collections::{BTreeMap, BTreeSet};

/// Longest payload template, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Most expressions (`{{…}}` and subexpressions) in one template.
pub const MAX_EXPRESSIONS: usize = 1024;
/// Deepest nesting of blocks (`#if`, `#each`, …, each `else if` a level too) and
/// subexpressions in one template: rendering recurses once per level.
pub const MAX_TEMPLATE_NESTING: usize = 16;
/// Most expression evaluations in one render: `#each` multiplies its body by the number
/// of collections (at least the 10 variables, for `#each @root`).
pub const MAX_RENDER_STEPS: u64 = 1_000_000;

/// Iterations an `#each` over the root object (the variables) makes.
const ROOT_KEYS: u64 = crate::VARIABLE_NAMES.len() as u64;

/// Block helpers a template may use.
const BLOCK_HELPERS: [&str; 4] = ["if", "unless", "each", "with"];
/// Helpers a template may call in an expression or subexpression.
pub(crate) const INLINE_HELPERS: [&str; 8] = [
    "json",
    "lookup",
    "eq",
    "ne",
    "and",
    "or",
    "not",
    super::timestamp::NAME,
];
/// Built-in Handlebars helpers a template may not use: `log` writes to the runtime's log
/// on every render, `raw` and the orderings and `len` are not needed (and `gt` and `len`
/// would walk a whole list).
pub(crate) const REMOVED_HELPERS: [&str; 7] = ["log", "raw", "gt", "gte", "lt", "lte", "len"];

/// How many expressions a render of a template evaluates, by what it iterates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Steps outside any `#each` over a variable (literal lists included, times their length).
    fixed: u64,
    /// Steps of the bodies of every `#each` over a variable, once each.
    per_iteration: u64,
}

impl Shape {
    /// The steps of a render for a transaction with `collections` collection names.
    pub(crate) fn steps(&self, collections: usize) -> u64 {
        let iterations = u64::try_from(collections)
            .unwrap_or(u64::MAX)
            .max(ROOT_KEYS);
        self.fixed
            .saturating_add(self.per_iteration.saturating_mul(iterations))
    }
}

/// Checks `source` before the compiler sees it: its length, its `{{` count and how deep
/// blocks and parentheses nest (over-counting only).
pub(crate) fn prescan(source: &str) -> Result<(), TemplateError> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::TooLarge {
            bytes: source.len(),
            max: MAX_TEMPLATE_BYTES,
        });
    }
    let bytes = source.as_bytes();
    let (mut line, mut line_start) = (1usize, 0usize);
    let mut opens = 0usize;
    let mut blocks = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            line += 1;
            line_start = i + 1;
        }
        if !bytes[i..].starts_with(b"{{") {
            i += 1;
            continue;
        }
        let column = i - line_start + 1;
        opens += 1;
        if opens > MAX_EXPRESSIONS {
            return Err(TemplateError::TooManyExpressions {
                max: MAX_EXPRESSIONS,
            });
        }
        i += 2;
        while i < bytes.len() && matches!(bytes[i], b'{' | b'~') {
            i += 1;
        }
        match bytes.get(i) {
            Some(b'#') => blocks += 1,
            Some(b'^') if !is_else(&bytes[i + 1..]) => blocks += 1,
            Some(b'/') => blocks = blocks.saturating_sub(1),
            _ => {}
        }
        // Parentheses up to the end of the mustache, outside string literals.
        let mut parens = 0usize;
        let mut quote: Option<u8> = None;
        while i < bytes.len() && !(quote.is_none() && bytes[i..].starts_with(b"}}")) {
            match (quote, bytes[i]) {
                (Some(q), b) if b == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(bytes[i]),
                (None, b'(') => parens += 1,
                (None, b')') => parens = parens.saturating_sub(1),
                (None, b'\n') => {
                    line += 1;
                    line_start = i + 1;
                }
                (None, _) => {}
            }
            if blocks + parens > MAX_TEMPLATE_NESTING {
                return Err(too_deep(line, column));
            }
            i += 1;
        }
        if blocks > MAX_TEMPLATE_NESTING {
            return Err(too_deep(line, column));
        }
    }
    Ok(())
}

/// Whether the rest of a `{{^` mustache is `}}` (or `~}}`): then it is `else`.
fn is_else(rest: &[u8]) -> bool {
    let rest = rest
        .iter()
        .skip_while(|b| b.is_ascii_whitespace() || **b == b'~');
    rest.take(2).eq(b"}}".iter())
}

fn too_deep(line: usize, column: usize) -> TemplateError {
    TemplateError::TooDeep {
        max: MAX_TEMPLATE_NESTING,
        line,
        column,
    }
}

/// Walks a compiled template: every bound above, and its [`Shape`]; `headers` are the
/// trigger's. Also gives the header names the template writes (`headers.<Name>`), each
/// one the trigger has: any other use of `headers` is refused (see [`super::headers`]).
pub(crate) fn check(
    template: &Template,
    headers: &BTreeMap<String, Secret>,
) -> Result<(Shape, BTreeSet<String>), TemplateError> {
    let mut walk = Walk {
        expressions: 0,
        shape: Shape::default(),
        headers,
        named: BTreeSet::new(),
    };
    let fixed = walk.template(template, 0, false, true)?;
    walk.shape.fixed = walk.shape.fixed.saturating_add(fixed);
    Ok((walk.shape, walk.named))
}

struct Walk<'a> {
    expressions: usize,
    shape: Shape,
    /// The trigger's headers (only their names are read).
    headers: &'a BTreeMap<String, Secret>,
    /// The header names the template writes.
    named: BTreeSet<String>,
}

impl Walk<'_> {
    /// Checks the elements of `template` at nesting `depth`; returns their steps (an
    /// `#each` over a variable adds its body to `per_iteration` instead).
    fn template(
        &mut self,
        template: &Template,
        depth: usize,
        in_each: bool,
        at_root: bool,
    ) -> Result<u64, TemplateError> {
        let mut steps = 0u64;
        for (index, element) in template.elements.iter().enumerate() {
            let (line, column) = template
                .mapping
                .get(index)
                .map_or((0, 0), |at| (at.0, at.1));
            let at = At { line, column };
            steps = steps.saturating_add(match element {
                TemplateElement::RawString(_) | TemplateElement::Comment(_) => 0,
                TemplateElement::Expression(expression)
                | TemplateElement::HtmlExpression(expression) => {
                    self.expression(expression, depth, at, at_root)?
                }
                TemplateElement::HelperBlock(block) => {
                    self.block(block, depth, in_each, at, at_root)?
                }
                TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                    return Err(
                        at.unsupported("partials and decorators (`{{#*inline}}`, `{{* …}}`)")
                    );
                }
                TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                    return Err(at.unsupported("partials (`{{> …}}`, `{{#> …}}`)"));
                }
                // A construct a later Handlebars adds has no known bounds.
                _ => return Err(at.unsupported("these constructs")),
            });
        }
        Ok(steps)
    }

    /// One `{{…}}` or subexpression at nesting `depth`: its steps. `at_root` says the
    /// context is the variables themselves (not an `#each` item or a `#with` value).
    fn expression(
        &mut self,
        expression: &HelperTemplate,
        depth: usize,
        at: At,
        at_root: bool,
    ) -> Result<u64, TemplateError> {
        let calls = !expression.params.is_empty() || !expression.hash.is_empty();
        // `{{timestamp}}` alone is a call too (of no arguments), not a variable.
        if helper_name(&expression.name) == Some(super::timestamp::NAME) {
            super::timestamp::check_literals(expression, at.line, at.column)?;
        }
        if let Some((path, _)) = super::headers::written_header(expression) {
            // `{{headers.Name}}` or `{{json headers.Name}}`: one step, and one more for
            // `json`'s argument.
            self.header(path, at, at_root, true)?;
            self.count()?;
            return Ok(1 + u64::from(calls));
        }
        if calls {
            let allowed =
                helper_name(&expression.name).is_some_and(|n| INLINE_HELPERS.contains(&n));
            if !allowed {
                return Err(at.unknown_helper(&expression.name));
            }
        } else {
            self.header(&expression.name, at, at_root, false)?;
            if at_root {
                self.known_variable(&expression.name, at)?;
            }
        }
        self.arguments(expression, depth, at, at_root)
    }

    /// The expression itself and its arguments: their steps.
    fn arguments(
        &mut self,
        expression: &HelperTemplate,
        depth: usize,
        at: At,
        at_root: bool,
    ) -> Result<u64, TemplateError> {
        self.count()?;
        let mut steps = 1u64;
        for param in expression.params.iter().chain(expression.hash.values()) {
            steps = steps.saturating_add(self.parameter(param, depth, at, at_root)?);
        }
        Ok(steps)
    }

    fn parameter(
        &mut self,
        param: &Parameter,
        depth: usize,
        at: At,
        at_root: bool,
    ) -> Result<u64, TemplateError> {
        match param {
            Parameter::Subexpression(sub) => {
                if depth + 1 > MAX_TEMPLATE_NESTING {
                    return Err(at.too_deep());
                }
                match sub.as_element() {
                    TemplateElement::Expression(inner) => {
                        self.expression(inner, depth + 1, at, at_root)
                    }
                    _ => Err(at.unsupported("this subexpression")),
                }
            }
            Parameter::Path(_) => {
                self.header(param, at, at_root, false)?;
                if at_root {
                    self.known_variable(param, at)?;
                }
                Ok(1)
            }
            Parameter::Name(_) | Parameter::Literal(_) => Ok(1),
            _ => Err(at.unsupported("these parameters")),
        }
    }

    /// A `{{#helper}}…{{/helper}}` block at nesting `depth`: its steps.
    fn block(
        &mut self,
        block: &HelperTemplate,
        depth: usize,
        in_each: bool,
        at: At,
        at_root: bool,
    ) -> Result<u64, TemplateError> {
        if depth + 1 > MAX_TEMPLATE_NESTING {
            return Err(at.too_deep());
        }
        let name = match helper_name(&block.name) {
            Some(name) if BLOCK_HELPERS.contains(&name) => name,
            _ => return Err(at.unknown_helper(&block.name)),
        };
        let mut steps = self.arguments(block, depth, at, at_root)?;
        let each = name == "each";
        if each && in_each {
            return Err(TemplateError::NestedEach {
                line: at.line,
                column: at.column,
            });
        }
        let body = match &block.template {
            // `#each` and `#with` bodies see another context; `#if` and `#unless` keep it.
            Some(body) => self.template(
                body,
                depth + 1,
                in_each || each,
                at_root && !each && name != "with",
            )?,
            None => 0,
        };
        if let Some(inverse) = &block.inverse {
            steps = steps.saturating_add(self.template(inverse, depth + 1, in_each, at_root)?);
        }
        if !each {
            return Ok(steps.saturating_add(body));
        }
        match block.params.first() {
            // A literal list iterates its own length, whatever the transaction.
            Some(Parameter::Literal(serde_json::Value::Array(items))) => {
                Ok(steps.saturating_add(body.saturating_mul(items.len() as u64)))
            }
            Some(Parameter::Literal(serde_json::Value::Object(entries))) => {
                Ok(steps.saturating_add(body.saturating_mul(entries.len() as u64)))
            }
            // Anything else may be `collection_names` (or the root object).
            _ => {
                self.shape.per_iteration = self.shape.per_iteration.saturating_add(body);
                Ok(steps)
            }
        }
    }

    fn count(&mut self) -> Result<(), TemplateError> {
        self.expressions += 1;
        if self.expressions > MAX_EXPRESSIONS {
            return Err(TemplateError::TooManyExpressions {
                max: MAX_EXPRESSIONS,
            });
        }
        Ok(())
    }
}

impl Walk<'_> {
    /// In the variables' own context, a plain path (`name`, `name.more`) must start with a
    /// variable's name: strict mode refuses any other at render time, and a branch the
    /// trial render does not take (an `#unless`, an `{{else}}`) would otherwise fail only
    /// at delivery. `headers` must be followed by exactly one of the trigger's header
    /// names. Paths this cannot judge (`this`, `@root`, `@index`, `../`) are left to the
    /// trial render.
    fn known_variable(&self, param: &Parameter, at: At) -> Result<(), TemplateError> {
        let Parameter::Path(Path::Relative((segments, raw))) = param else {
            return Ok(());
        };
        let Some(PathSeg::Named(first)) = segments.first() else {
            return Ok(());
        };
        let judged = !(raw.starts_with('@') || raw.starts_with('.') || raw.starts_with("this"));
        if !judged {
            return Ok(());
        }
        // `headers` is judged by `header`.
        if first != "headers" && !crate::VARIABLE_NAMES.contains(&first.as_str()) {
            return Err(TemplateError::UnknownVariable {
                variable: raw.clone(),
                line: at.line,
                column: at.column,
            });
        }
        Ok(())
    }

    /// Judges a path whose first name is `headers`, anywhere: it must name one of the
    /// trigger's headers (exactly one name after `headers`), be `written` (the
    /// expression `{{headers.Name}}`, or `json`'s only argument), and reach the root
    /// (bare in the root's context, or through `@root`). Notes the header written.
    fn header(
        &mut self,
        param: &Parameter,
        at: At,
        at_root: bool,
        written: bool,
    ) -> Result<(), TemplateError> {
        let Some(path) = super::headers::HeaderPath::of(param) else {
            return Ok(());
        };
        let raw = match param {
            Parameter::Path(Path::Relative((_, raw))) => raw.chars().take(256).collect(),
            _ => String::new(),
        };
        let name = match path.name() {
            Some(name) if self.headers.contains_key(name) => name,
            _ => {
                return Err(TemplateError::UnknownHeader {
                    path: raw,
                    line: at.line,
                    column: at.column,
                    headers: self
                        .headers
                        .keys()
                        .take(crate::config::document::MAX_HEADERS)
                        .map(|name| name.chars().take(64).collect())
                        .collect(),
                });
            }
        };
        let reaches_root = !path.up && (path.rooted || at_root);
        if !written || !reaches_root {
            return Err(TemplateError::HeaderUse {
                path: raw,
                line: at.line,
                column: at.column,
            });
        }
        self.named.insert(name.to_string());
        Ok(())
    }
}

/// The name of a helper as the parser gives it: a name, or a path of one plain segment.
fn helper_name(name: &Parameter) -> Option<&str> {
    match name {
        Parameter::Name(name) => Some(name),
        Parameter::Path(Path::Relative((segments, _))) => match segments.as_slice() {
            [PathSeg::Named(name)] => Some(name),
            _ => None,
        },
        _ => None,
    }
}

/// Where an element starts in the template.
#[derive(Debug, Clone, Copy)]
struct At {
    line: usize,
    column: usize,
}

impl At {
    fn too_deep(self) -> TemplateError {
        too_deep(self.line, self.column)
    }

    fn unsupported(self, what: &'static str) -> TemplateError {
        TemplateError::Unsupported {
            what,
            line: self.line,
            column: self.column,
        }
    }

    fn unknown_helper(self, name: &Parameter) -> TemplateError {
        let name = match name {
            Parameter::Name(name) => name.clone(),
            Parameter::Path(Path::Relative((_, raw)) | Path::Local((_, _, raw))) => raw.clone(),
            Parameter::Literal(value) => value.to_string(),
            _ => "(…)".to_string(),
        };
        TemplateError::UnknownHelper {
            name: name.chars().take(64).collect(),
            line: self.line,
            column: self.column,
        }
    }
}
