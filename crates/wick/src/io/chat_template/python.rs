//! Where Python's jinja2 and minijinja differ in what templates see: the methods of `str`, `dict`
//! and `list` (minijinja-contrib's pycompat covers most of them), tests and filters whose jinja2
//! behaviour real templates depend on, and `for` loops over `None`, which jinja2 refuses.

use std::borrow::Cow;
use std::sync::Arc;

use minijinja::filters;
use minijinja::value::{
    Enumerator, Kwargs, Object, ObjectExt, ObjectRepr, Rest, ValueKind, ValueOrKwargs,
};
use minijinja::{Environment, Error, ErrorKind, State, Value};

/// The filter every `{% for %}` loop's iterable passes through (see [`rewrite_for`]).
pub(super) const ITER_FILTER: &str = "_wick_py_iter";

/// The filter that HTML-escapes the plain operands of a sum with a `|safe` one (see
/// `rewrite::markup_concat`).
pub(super) const MARKUP_ESCAPE_FILTER: &str = "_wick_markup_escape";

/// Adds the Python behaviour to `env`.
pub(super) fn install(env: &mut Environment<'static>) {
    env.set_unknown_method_callback(unknown_method);
    env.add_filter(ITER_FILTER, py_iter);
    env.add_filter(MARKUP_ESCAPE_FILTER, markup_escape);
    env.add_filter("indent", indent);
    env.add_test("iterable", is_iterable);
    // jinja2's select/reject/map/unique filters return generators.
    env.add_filter(
        "map",
        |state: &mut State, value: Value, args: Rest<ValueOrKwargs>| {
            filters::map(state, value, args).map(Generator::value)
        },
    );
    env.add_filter(
        "select",
        |state: &mut State, value: Value, test: Option<String>, args: Rest<ValueOrKwargs>| {
            filters::select(state, value, test.map(Cow::Owned), args).map(Generator::value)
        },
    );
    env.add_filter(
        "reject",
        |state: &mut State, value: Value, test: Option<String>, args: Rest<ValueOrKwargs>| {
            filters::reject(state, value, test.map(Cow::Owned), args).map(Generator::value)
        },
    );
    env.add_filter(
        "selectattr",
        |state: &mut State,
         value: Value,
         attr: String,
         test: Option<String>,
         args: Rest<ValueOrKwargs>| {
            filters::selectattr(state, value, Cow::Owned(attr), test.map(Cow::Owned), args)
                .map(Generator::value)
        },
    );
    env.add_filter(
        "rejectattr",
        |state: &mut State,
         value: Value,
         attr: String,
         test: Option<String>,
         args: Rest<ValueOrKwargs>| {
            filters::rejectattr(state, value, Cow::Owned(attr), test.map(Cow::Owned), args)
                .map(Generator::value)
        },
    );
}

/// What jinja2's `map`, `select`, `reject`, `selectattr` and `rejectattr` return: a Python
/// generator. Loops, `|list`, `|join` and `|first` read it as minijinja's list; unlike a list
/// it is always true (an empty generator too) and `tojson` refuses it as Python's `json.dumps`
/// does.
#[derive(Debug)]
pub(super) struct Generator(Vec<Value>);

impl Generator {
    fn value(items: Vec<Value>) -> Value {
        Value::from_object(Generator(items))
    }
}

impl Object for Generator {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Iterable
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| Box::new(this.0.iter().cloned()))
    }
    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
    fn is_true(self: &Arc<Self>) -> bool {
        true
    }
}

fn unknown_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// A loop's iterable, refused as jinja2 refuses it: minijinja iterates `none` as empty, Python
/// raises `TypeError: 'NoneType' object is not iterable` (a template that loops over `tools`
/// without checking it, given no tools).
fn py_iter(value: Value) -> Result<Value, Error> {
    if value.is_none() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "'NoneType' object is not iterable (a `for` loop over none)",
        ));
    }
    Ok(value)
}

/// What Python's `Markup.__add__` does to the plain string added to it: markupsafe's escape
/// (a safe string stays as it is; a non-string cannot be added to Markup).
fn markup_escape(value: Value) -> Result<Value, Error> {
    if value.is_safe() {
        return Ok(value);
    }
    let Some(text) = value.as_str() else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot add {} to a |safe (Markup) string", value.kind()),
        ));
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Ok(Value::from_safe_string(out))
}

/// jinja2's `is iterable`: Python's `iter(value)` succeeds (not for none or numbers; undefined
/// is iterable).
fn is_iterable(value: &Value) -> bool {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number => false,
        ValueKind::Undefined => true,
        _ => value.try_iter().is_ok(),
    }
}

/// jinja2's `indent(width=4, first=False, blank=False)`, quirks included: the text gets a
/// newline appended before it is split with Python's `splitlines`, so a trailing newline is
/// kept, and `width` may be a string to indent with.
fn indent(state: &State, value: Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    // By hand: minijinja's argument tuples cannot mix optional positionals with keywords
    // (`indent(4, first=true)`).
    let (kwargs, positional): (Vec<&Value>, Vec<&Value>) =
        args.iter().map(|v| &**v).partition(|v| v.is_kwargs());
    let kwargs = match kwargs.as_slice() {
        [] => Kwargs::from_iter(std::iter::empty::<(&str, Value)>()),
        [kw] => Kwargs::try_from((*kw).clone())?,
        _ => return Err(Error::new(ErrorKind::TooManyArguments, "indent")),
    };
    if positional.len() > 3 {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            "indent takes at most width, first and blank",
        ));
    }
    let flag = |i: usize, name: &str| -> Result<bool, Error> {
        match positional.get(i) {
            Some(v) => Ok(v.is_true()),
            None => Ok(kwargs.get::<Option<bool>>(name)?.unwrap_or(false)),
        }
    };
    let width: Option<Value> = match positional.first() {
        Some(w) => Some((*w).clone()),
        None => kwargs.get("width")?,
    };
    let first = flag(1, "first")?;
    let blank = flag(2, "blank")?;
    kwargs.assert_all_used()?;
    let Some(text) = value.as_str() else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("indent expects a string, got {}", value.kind()),
        ));
    };
    let indention = match &width {
        None => "    ".to_string(),
        Some(w) if w.kind() == ValueKind::String => w.as_str().unwrap_or_default().to_string(),
        Some(w) => {
            let n = usize::try_from(w.clone()).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("indent width must be a count or a string, got {w}"),
                )
            })?;
            charge(state, n)?;
            " ".repeat(n)
        }
    };
    let with_newline = format!("{text}\n");
    let lines = splitlines(&with_newline);
    charge(
        state,
        text.len() + indention.len().saturating_mul(lines.len()),
    )?;
    let mut rv = String::new();
    if blank {
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                rv.push('\n');
                rv.push_str(&indention);
            }
            rv.push_str(line);
        }
    } else {
        let mut lines = lines.iter();
        rv.push_str(lines.next().copied().unwrap_or_default());
        for line in lines {
            rv.push('\n');
            if !line.is_empty() {
                rv.push_str(&indention);
            }
            rv.push_str(line);
        }
    }
    if first {
        rv.insert_str(0, &indention);
    }
    Ok(Value::from(rv))
}

/// Charges the render's fuel for `bytes` of new text (one unit per 64 bytes, as minijinja does).
fn charge(state: &State, bytes: usize) -> Result<(), Error> {
    state.consume_fuel((bytes / 64) as u64)
}

/// Python's `str.splitlines()`: splits at every line boundary Python knows (`\r\n` counts once)
/// and drops them; no empty last piece after a final boundary.
pub(super) fn splitlines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let boundary = matches!(
            c,
            '\n' | '\r'
                | '\u{0b}'
                | '\u{0c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if !boundary {
            continue;
        }
        out.push(&s[start..i]);
        let mut end = i + c.len_utf8();
        if c == '\r' {
            if let Some(&(j, '\n')) = chars.peek() {
                chars.next();
                end = j + 1;
            }
        }
        start = end;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}
