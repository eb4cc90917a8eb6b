//! A linear-time bound on the flow nesting (`[`, `{`) of a YAML text, checked before the
//! parser sees it. libyaml's scanner re-examines every open flow level for each token, so a
//! document nested 100,000 levels deep took half a minute to be refused by the parser's own
//! recursion limit, which only applies once the whole document has been scanned.
//!
//! This is a lexer, not a parser: it skips quoted scalars, comments and block scalars, and
//! counts a bracket in block context only where a node can start. Where YAML is ambiguous to
//! it (a plain scalar continued on a line starting with `[`), it counts too many levels, never
//! too few, and the limit is far above the parser's own (128), so a document the parser would
//! accept is never refused here.

/// Flow levels beyond which a text is refused without being parsed.
pub const MAX_FLOW_DEPTH: usize = 1000;

/// Where the text first goes deeper than `limit`: (line, column), both from 1.
pub fn too_deep(text: &str, limit: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let (mut i, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let mut depth = 0usize;
    // Block context: a node (value, key, entry) may start at the next non-blank byte.
    let mut node_pos = true;
    // Column of the block node a block scalar would belong to (its content is deeper).
    let mut node_col: isize = -1;
    // Inside a block scalar: lines blank or indented deeper than this are its content.
    let mut scalar_parent: Option<isize> = None;
    let mut at_line_start = true;
    let blank = |c: u8| c == b' ' || c == b'\t' || c == b'\n' || c == b'\r';
    while i < b.len() {
        if at_line_start {
            at_line_start = false;
            line_start = i;
            let indent = b[i..].iter().take_while(|&&c| c == b' ').count();
            let rest = &b[i + indent..];
            let is_blank = rest
                .iter()
                .take_while(|&&c| c != b'\n')
                .all(|&c| c == b' ' || c == b'\t' || c == b'\r');
            if let Some(parent) = scalar_parent {
                if is_blank || indent as isize > parent {
                    i = skip_line(b, i);
                    if i < b.len() {
                        line += 1;
                        i += 1;
                        at_line_start = true;
                    }
                    continue;
                }
                scalar_parent = None;
            }
            if depth == 0 {
                node_pos = true;
                node_col = indent as isize;
            }
            i += indent;
            continue;
        }
        let c = b[i];
        let col = i - line_start;
        let after_blank = i == line_start || blank(b[i - 1]);
        if c == b'\n' {
            line += 1;
            i += 1;
            at_line_start = true;
            continue;
        }
        if c == b'#' && after_blank {
            i = skip_line(b, i);
            continue;
        }
        let quote_here = if depth > 0 {
            i == line_start || b"[{,:".contains(&b[i - 1]) || blank(b[i - 1])
        } else {
            node_pos
        };
        if (c == b'"' || c == b'\'') && quote_here {
            if depth == 0 {
                node_col = col as isize;
                node_pos = false;
            }
            let (end, lines) = skip_quoted(b, i);
            if lines > 0 {
                line += lines;
                line_start = b[..end]
                    .iter()
                    .rposition(|&x| x == b'\n')
                    .map_or(0, |p| p + 1);
            }
            i = end;
            continue;
        }
        if depth > 0 {
            match c {
                b'[' | b'{' => {
                    depth += 1;
                    if depth > limit {
                        return Some((line, col + 1));
                    }
                }
                b']' | b'}' => depth -= 1,
                _ => {}
            }
            i += 1;
            continue;
        }
        let next_blank = b.get(i + 1).is_none_or(|&n| blank(n));
        if node_pos {
            match c {
                b' ' | b'\t' | b'\r' => {}
                b'-' if b[i..].starts_with(b"---") && col == 0 => {
                    i += 3;
                    node_col = -1;
                    continue;
                }
                b'-' | b'?' if next_blank => node_col = col as isize,
                b'[' | b'{' => {
                    depth = 1;
                    node_pos = false;
                    if depth > limit {
                        return Some((line, col + 1));
                    }
                }
                b'|' | b'>' => {
                    scalar_parent = Some(node_col);
                    i = skip_line(b, i);
                    continue;
                }
                b'&' | b'!' => {
                    // An anchor or a tag comes before the node it names.
                    while i < b.len() && !blank(b[i]) {
                        i += 1;
                    }
                    continue;
                }
                _ => {
                    node_col = col as isize;
                    node_pos = false;
                }
            }
        } else if c == b':' && next_blank {
            node_pos = true;
        }
        i += 1;
    }
    None
}

fn skip_line(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i
}

/// Past the closing quote (or the end); and the newlines crossed.
fn skip_quoted(b: &[u8], start: usize) -> (usize, usize) {
    let q = b[start];
    let mut i = start + 1;
    let mut lines = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if q == b'"' => i += 1,
            b'\'' if q == b'\'' && b.get(i + 1) == Some(&b'\'') => i += 1,
            c if c == q => return (i + 1, lines),
            b'\n' => lines += 1,
            _ => {}
        }
        i += 1;
    }
    // An escape as the last byte steps past the end.
    (i.min(b.len()), lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("spec: {}1{}\n", "{a: ".repeat(n), "}".repeat(n))
    }

    #[test]
    fn deep_flow_nesting_is_found_where_it_crosses_the_limit() {
        assert_eq!(too_deep(&nested(5), 5), None);
        assert_eq!(too_deep(&nested(6), 5), Some((1, 7 + 4 * 5)));
        assert_eq!(too_deep(&"[".repeat(100_000), 1000), Some((1, 1001)));
    }

    #[test]
    fn brackets_in_scalars_comments_and_block_scalars_do_not_count() {
        let text = "a: \"[[[[\"\nb: '[[{{''[['\nc: x[[[[\n# [[[[[[\nd: |\n  [[[[[[\n  {{{{\ne: [1, [2]]\n- \"[[\" # [[[\nf: >-\n\n   [[[[[\n";
        assert_eq!(too_deep(text, 2), None);
        assert_eq!(too_deep("e: [[[1]]]\n", 2), Some((1, 6)));
    }

    #[test]
    fn an_unterminated_quote_ending_in_an_escape_is_not_a_panic() {
        // Found by fuzz_manifests: the escape skipped past the end of the text.
        assert_eq!(too_deep("a: \"x\n\\", 5), None);
        assert_eq!(too_deep("\"\\", 5), None);
    }

    #[test]
    fn a_block_scalar_ends_at_its_parents_indentation() {
        let text = "- k: |\n    [[[[\n  other: [[[[x]]]]\n";
        assert_eq!(too_deep(text, 3), Some((3, 13)));
    }
}
