//! Source rewrites that give minijinja jinja2's meaning for two block tags:
//! - `{% generation %}` marks assistant text for training masks in transformers; as markup it is
//!   a no-op, so it becomes `{% if true %}` (keeping its whitespace control).
//! - `{% for x in ITER %}` becomes `{% for x in (ITER)|_wick_py_iter %}`: jinja2 refuses to loop
//!   over none, minijinja loops zero times, and the filter restores the error.
//!
//! The scanner skips comments, `{{ }}` expressions, string literals and `{% raw %}` blocks, and
//! leaves anything it does not understand as it is for minijinja's parser to judge.

use super::python::{ITER_FILTER, MARKUP_ESCAPE_FILTER};

pub(super) fn rewrite(src: &str) -> String {
    let mut out = String::with_capacity(src.len() + 64);
    let mut rest = src;
    loop {
        let Some(start) = find_opening(rest) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let (close, is_block) = match &tag[..2] {
            "{#" => ("#}", false),
            "{{" => ("}}", false),
            _ => ("%}", true),
        };
        let Some(end) = find_closing(&tag[2..], close, close != "#}").map(|i| i + 2) else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        rest = &tag[end + 2..];
        if !is_block {
            match (close, markup_concat(inner)) {
                ("}}", Some(expr)) => {
                    out.push_str("{{");
                    out.push_str(&expr);
                    out.push_str("}}");
                }
                _ => out.push_str(&tag[..end + 2]),
            }
            continue;
        }
        let word = keyword(inner);
        if word == "raw" {
            // Everything up to `{% endraw %}` is text.
            out.push_str(&tag[..end + 2]);
            let stop = find_endraw(rest).unwrap_or(rest.len());
            out.push_str(&rest[..stop]);
            rest = &rest[stop..];
            continue;
        }
        let replaced = match word {
            "generation" => inner.replacen("generation", "if true", 1),
            "endgeneration" => inner.replacen("endgeneration", "endif", 1),
            "for" => wrap_for_iterable(inner).unwrap_or_else(|| inner.to_string()),
            _ => inner.to_string(),
        };
        out.push_str("{%");
        out.push_str(&replaced);
        out.push_str("%}");
    }
}

/// `A|safe + B + ...` with jinja2's meaning: `safe` makes a Markup string, and adding a plain
/// string to Markup (on either side) HTML-escapes the plain one. minijinja's `+` never escapes,
/// so each plain operand of such a sum gets the escape filter and the sum becomes a `~` join.
/// Only an expression that is nothing but a sum is rewritten (`None` otherwise): the operands of
/// a wider expression would be hard to delimit.
fn markup_concat(inner: &str) -> Option<String> {
    let body = inner.trim_start_matches(['-', '+']);
    let body = body.trim_end_matches(['-', '+']);
    let lead = &inner[..inner.len() - inner.trim_start_matches(['-', '+']).len()];
    let trail = &inner[inner.trim_end_matches(['-', '+']).len()..];
    let operands = top_level_sum(body)?;
    let is_safe = |op: &str| {
        let op = op.trim_end();
        let op = op.strip_suffix("()").unwrap_or(op).trim_end();
        op.strip_suffix("safe")
            .is_some_and(|rest| rest.trim_end().ends_with('|'))
    };
    if operands.len() < 2 || !operands.iter().any(|op| is_safe(op)) {
        return None;
    }
    let joined: Vec<String> = operands
        .iter()
        .map(|op| {
            if is_safe(op) {
                format!("({})", op.trim())
            } else {
                format!("({})|{MARKUP_ESCAPE_FILTER}", op.trim())
            }
        })
        .collect();
    Some(format!("{lead} {} {trail}", joined.join(" ~ ")))
}

/// The operands of `s` if it is a sum at the top level (outside strings and brackets) and has
/// no other top-level operator of lower or equal precedence (`-`, `~`, comparisons, `and`, `or`,
/// `not`, `if`, `in`, `is`); `None` otherwise.
fn top_level_sum(s: &str) -> Option<Vec<&str>> {
    let bytes = s.as_bytes();
    let mut operands = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                i = skip_string(bytes, i)?;
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.checked_sub(1)?,
            b'+' if depth == 0 => {
                operands.push(&s[start..i]);
                start = i + 1;
            }
            b'-' | b'~' | b'<' | b'>' | b'=' | b'!' | b'*' | b'/' | b'%' if depth == 0 => {
                return None
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return None;
    }
    operands.push(&s[start..]);
    let words = top_level_words(s)?;
    if words
        .iter()
        .any(|(_, w)| matches!(*w, "and" | "or" | "not" | "if" | "else" | "in" | "is"))
    {
        return None;
    }
    Some(operands)
}

/// The first `{%`, `{{` or `{#` in `s`.
fn find_opening(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'{' && matches!(bytes[i + 1], b'%' | b'{' | b'#'))
}

/// Where `close` ends the tag body `s`, skipping string literals when `strings` is set.
fn find_closing(s: &str, close: &str, strings: bool) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if strings && matches!(bytes[i], b'\'' | b'"') {
            i = skip_string(bytes, i)?;
            continue;
        }
        // Bytes, not `&s[i..]`: `i` may sit inside a multi-byte character.
        if bytes[i..].starts_with(close.as_bytes()) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The index after the string literal that starts at `i` (backslash escapes honoured).
fn skip_string(bytes: &[u8], i: usize) -> Option<usize> {
    let quote = bytes[i];
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b if b == quote => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The first word of a block tag's body, without whitespace control.
fn keyword(inner: &str) -> &str {
    let body = inner.trim_start_matches(['-', '+']).trim_start();
    let end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let word = &body[..end];
    // `{%- generation -%}`: the word is the whole body.
    word
}

/// Where the `{% endraw %}` tag in `s` starts.
fn find_endraw(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("{%").map(|i| i + from) {
        let end = s[i + 2..].find("%}")?;
        if keyword(&s[i + 2..i + 2 + end]) == "endraw" {
            return Some(i);
        }
        from = i + 2;
    }
    None
}

/// `for TARGET in ITER [if COND] [recursive]` with ITER wrapped in the none-refusing filter;
/// `None` when the body does not look like that.
fn wrap_for_iterable(inner: &str) -> Option<String> {
    let bytes = inner.as_bytes();
    let words = top_level_words(inner)?;
    let mut words = words.into_iter().skip_while(|&(_, w)| w != "for");
    words.next()?;
    let (in_at, _) = words.find(|&(_, w)| w == "in")?;
    let iter_start = in_at + 2;
    let mut iter_end = words
        .find(|&(_, w)| w == "if" || w == "recursive")
        .map_or(bytes.len(), |(i, _)| i);
    if iter_end == bytes.len() && matches!(bytes.last(), Some(b'-' | b'+')) {
        iter_end -= 1;
    }
    let iterable = inner[iter_start..iter_end].trim();
    if iterable.is_empty() {
        return None;
    }
    Some(format!(
        "{} ({iterable})|{ITER_FILTER} {}",
        &inner[..iter_start],
        &inner[iter_end..]
    ))
}

/// The words of `s` (identifiers) outside string literals and brackets, with their offsets;
/// `None` when a string or bracket is left open.
fn top_level_words(s: &str) -> Option<Vec<(usize, &str)>> {
    let bytes = s.as_bytes();
    let mut words = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                i = skip_string(bytes, i)?;
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.checked_sub(1)?,
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                // A word right after a dot is an attribute (`x.if`), not a keyword.
                let attribute = start > 0 && bytes[start - 1] == b'.';
                if depth == 0 && !attribute {
                    words.push((start, &s[start..i]));
                }
                continue;
            }
            b if b.is_ascii_digit() => {
                // Skip numbers whole, so `1e5` is not the word `e5`.
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    (depth == 0).then_some(words)
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn for_loops_get_the_iter_filter_and_generation_tags_become_ifs() {
        let cases = [
            (
                "{% for m in messages %}x{% endfor %}",
                "{% for m in (messages)|_wick_py_iter %}x{% endfor %}",
            ),
            (
                "{%- for k, v in d.items() if v recursive -%}",
                "{%- for k, v in (d.items())|_wick_py_iter if v recursive -%}",
            ),
            (
                "{%- for t in tools | selectattr('x', 'in', '%}') -%}",
                "{%- for t in (tools | selectattr('x', 'in', '%}'))|_wick_py_iter -%}",
            ),
            ("{{ '{% for a in b %}' }}", "{{ '{% for a in b %}' }}"),
            ("{# {% for a in b %} #}", "{# {% for a in b %} #}"),
            (
                "{% raw %}{% for a in b %}{% endraw %}",
                "{% raw %}{% for a in b %}{% endraw %}",
            ),
            (
                "{%- generation -%}a{% endgeneration %}",
                "{%- if true -%}a{% endif %}",
            ),
            ("{% for a in %}", "{% for a in %}"),
            ("{%}", "{%}"),
            (
                "{# ƛƬ #}{% for a in b %}",
                "{# ƛƬ #}{% for a in (b)|_wick_py_iter %}",
            ),
            (
                "{{- 'a'|safe + t.name + 'b'|safe() -}}",
                "{{- ('a'|safe) ~ (t.name)|_wick_markup_escape ~ ('b'|safe()) -}}",
            ),
            ("{{ 'a'|safe + b if c }}", "{{ 'a'|safe + b if c }}"),
            ("{{ a + b }}", "{{ a + b }}"),
        ];
        for (src, want) in cases {
            assert_eq!(rewrite(src), want, "{src}");
        }
    }
}
