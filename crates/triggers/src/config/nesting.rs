//! How deep a document's collections nest, measured before any parser sees the text.
//!
//! serde_json stops at 128 levels by itself, but libyaml's scanner keeps one "simple key"
//! per open flow collection and revisits all of them on every token, so a YAML document of
//! `[[[[…` costs tokens × depth: 100k levels took over a minute. These scanners find the
//! first collection deeper than the bound in one linear pass.
//!
//! The YAML scanner follows libyaml's rules for what opens a flow collection: `[` and `{`
//! count when they start a node in block context or anywhere in flow context, but not
//! inside a quoted scalar, a plain scalar (in block context), a block scalar (`|`, `>`)
//! or a comment. Where it cannot tell (a quoted scalar that does not close on its line,
//! whose content may then be read as structure) it counts rather than skips, so it may
//! over-count but never under-counts a nesting libyaml would parse.

/// Where the first collection deeper than `max` opens: 1-based line and column (in bytes).
pub(super) type Position = (usize, usize);

/// The position of the first JSON array or object nested deeper than `max`, if any.
pub(super) fn json_too_deep(text: &str, max: usize) -> Option<Position> {
    let bytes = text.as_bytes();
    let mut lines = Lines::default();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                b'\n' => lines.newline(i),
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return Some(lines.at(i));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'\n' => lines.newline(i),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// The position of the first YAML flow collection nested deeper than `max`, if any.
/// Block collections (indentation) are bounded by the document's size and by
/// serde_yaml_ng's own recursion limit, and cost libyaml nothing extra.
///
/// Outside flow collections libyaml's depth is 0, so any count is an upper bound there;
/// inside them the rules below are libyaml's, except that a quoted scalar which does not
/// close on its line is scanned as structure whose closing brackets cannot go below the
/// depth where it opened (an upper bound whether libyaml reads it as a quote or not).
pub(super) fn yaml_too_deep(text: &str, max: usize) -> Option<Position> {
    let bytes = text.as_bytes();
    let mut lines = Lines::default();
    let mut flow = 0usize;
    // Whether the next character may start a node (a quote, a bracket, `|`, `>`).
    let mut node_start = true;
    // Inside a plain scalar: quotes and (in block context) brackets are its text.
    let mut plain = false;
    // Inside a quoted scalar that did not close on its line: its quote and the depth
    // closing brackets cannot go below.
    let mut open_quote: Option<(u8, usize)> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some((quote, floor)) = open_quote {
            match b {
                b'\n' => lines.newline(i),
                b'\\' if quote == b'"' => i += 1,
                b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                b'[' | b'{' => {
                    flow += 1;
                    if flow > max {
                        return Some(lines.at(i));
                    }
                }
                b']' | b'}' if flow > floor => flow -= 1,
                _ if b == quote => {
                    open_quote = None;
                    node_start = false;
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        let next_is_blank = next.is_none_or(is_blank);
        match b {
            b'\n' => {
                lines.newline(i);
                if flow == 0 {
                    // A block plain scalar may continue on the next line; reading that
                    // line as fresh nodes can only count more.
                    plain = false;
                }
                if !plain {
                    node_start = true;
                }
            }
            b' ' | b'\t' | b'\r' => {
                if !plain {
                    node_start = true;
                }
            }
            b'#' if !plain || (i > 0 && is_blank(bytes[i - 1])) => {
                // A comment runs to the end of the line, and ends a plain scalar.
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                plain = false;
                continue;
            }
            b'"' | b'\'' if node_start && !plain => match quoted_end_on_line(bytes, i) {
                Some(end) => {
                    i = end;
                    node_start = false;
                }
                None => open_quote = Some((b, flow)),
            },
            b'[' | b'{' if flow > 0 || (node_start && !plain) => {
                flow += 1;
                if flow > max {
                    return Some(lines.at(i));
                }
                node_start = true;
                plain = false;
            }
            b']' | b'}' if flow > 0 => {
                flow -= 1;
                node_start = false;
                plain = false;
            }
            b',' if flow > 0 => {
                node_start = true;
                plain = false;
            }
            b':' if next_is_blank || (!plain && flow > 0) => {
                node_start = true;
                plain = false;
            }
            b'-' | b'?' if next_is_blank && node_start && !plain => {}
            b'|' | b'>' if flow == 0 && node_start && !plain => {
                i = block_scalar_end(bytes, i, &mut lines);
                node_start = true;
                continue;
            }
            b'&' | b'!' | b'*' if node_start && !plain => {
                // An anchor, tag or alias: its name, then a node may still start.
                while i < bytes.len()
                    && !is_blank(bytes[i])
                    && !(flow > 0 && matches!(bytes[i], b',' | b'[' | b']' | b'{' | b'}'))
                {
                    i += 1;
                }
                node_start = true;
                continue;
            }
            _ => {
                node_start = false;
                plain = true;
            }
        }
        i += 1;
    }
    None
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The index of the closing quote of the quoted scalar opening at `start`, if it closes
/// before the end of the line (`''` escapes a single quote, `\` escapes in double quotes).
fn quoted_end_on_line(bytes: &[u8], start: usize) -> Option<usize> {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => return None,
            b'\\' if quote == b'"' => i += 1,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
            b if b == quote => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Skips a block scalar whose indicator is at `start`: the rest of its line, then its
/// content as libyaml finds it (blank lines, and lines indented at least as much as the
/// first non-blank one, which must be indented past the node that holds the scalar).
/// Returns the index of the newline before the first line after it.
fn block_scalar_end(bytes: &[u8], start: usize, lines: &mut Lines) -> usize {
    // The holding node's indentation: where the line's key starts, past any `- `. It may
    // be more than libyaml's (then less is skipped, and more counted), never less.
    let mut parent = lines.start;
    loop {
        while bytes.get(parent) == Some(&b' ') {
            parent += 1;
        }
        if bytes.get(parent) == Some(&b'-') && bytes.get(parent + 1) == Some(&b' ') {
            parent += 2;
        } else {
            break;
        }
    }
    let parent = parent - lines.start;
    let mut content: Option<usize> = None;
    let mut i = start;
    while i < bytes.len() && bytes[i] != b'\n' {
        i += 1;
    }
    // `i` is at the newline ending the previous line (or the end).
    while i < bytes.len() {
        let next_line = i + 1;
        let spaces = bytes[next_line..]
            .iter()
            .take_while(|b| **b == b' ')
            .count();
        let first = bytes.get(next_line + spaces).copied();
        let blank = matches!(first, None | Some(b'\n' | b'\r'));
        if !blank {
            let indent = *content.get_or_insert(spaces);
            if indent <= parent || spaces < indent {
                break;
            }
        }
        lines.newline(i);
        i = next_line;
        while i < bytes.len() && bytes[i] != b'\n' {
            i += 1;
        }
    }
    i
}

/// Line bookkeeping for positions in errors.
#[derive(Default)]
struct Lines {
    /// 0-based number of the current line.
    line: usize,
    /// Byte index where the current line starts.
    start: usize,
}

impl Lines {
    fn newline(&mut self, at: usize) {
        self.line += 1;
        self.start = at + 1;
    }

    fn at(&self, index: usize) -> Position {
        (self.line + 1, index - self.start + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert_eq!(json_too_deep(r#"{"a": [[1]]}"#, 3), None);
        assert_eq!(json_too_deep(r#"{"a": [[1]]}"#, 2), Some((1, 8)));
        assert_eq!(json_too_deep(r#"{"t": "{{{{[[[[\"{{"}"#, 1), None);
        assert_eq!(
            json_too_deep("{\n \"a\": {\n  \"b\": {}}}", 2),
            Some((3, 8))
        );
    }

    #[test]
    fn yaml_depth_counts_flow_collections_only() {
        let config = "config:\n  - url: https://x\n    payloadTemplate: '{\"a\": {\"b\": [[[1]]]}}'\n    headers: {A: b}\n";
        assert_eq!(yaml_too_deep(config, 1), None);
        let block = "config:\n  - payloadTemplate: |\n      {\"a\": {\"b\": [[[1]]]}}\n      'x\n    url: [[x]]\n";
        assert_eq!(yaml_too_deep(block, 2), None);
        assert_eq!(yaml_too_deep(block, 1), Some((5, 11)));
        // Brackets in a block-context plain scalar and in comments are text.
        assert_eq!(yaml_too_deep("a: b [[[ c # [[[\n# {{{\n", 0), None);
        // A plain scalar's quote does not start a quoted scalar that could hide brackets.
        assert_eq!(yaml_too_deep("[a 'b, [[[ ']", 3), Some((1, 10)));
        assert_eq!(yaml_too_deep("k: &x !!seq [[y]]", 1), Some((1, 14)));
        // A quote that does not close on its line hides no opening bracket, and its
        // closing brackets do not lower the count below where it opened.
        assert_eq!(yaml_too_deep("k: 'a\n [[[[\n'", 3), Some((2, 5)));
        assert_eq!(yaml_too_deep("[[ 'a ]]]]\n' [[", 3), Some((2, 4)));
        // In flow context a plain scalar runs on across lines, its quotes are text.
        assert_eq!(yaml_too_deep("[a\n 'x, [[ ']", 2), Some((2, 7)));
    }
}
