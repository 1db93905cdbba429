//! Checks on parameter names: MongoDB operators and prototype pollution.
//!
//! A name is judged by its tokens: the text between `[`, `]` and `.`. That
//! covers every way qs nests a name (`a[b][c]`, a leading `[b]`, text
//! between groups, `allowDots`), the bracket and dot paths that path-setter
//! libraries take inside one JSON key (`__proto__[x]`, `a.__proto__.b`),
//! without having to be qs: a token that qs would not nest is judged too.

use crate::{Finding, Rule};

/// `$`-keys that are not operators: JSON Schema's keywords.
const NOT_OPERATORS: &[&str] = &[
    "$schema",
    "$ref",
    "$id",
    "$defs",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$vocabulary",
    "$comment",
];

/// `Object.prototype`'s methods: a client's own property of that name
/// shadows the method for code that calls it on the parsed object
/// (`req.body.hasOwnProperty(k)` then throws; body-parser's extended form
/// parser lets qs create such keys).
const PROTOTYPE_METHODS: &[&str] = &[
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toString",
    "toLocaleString",
    "valueOf",
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
];

/// The tokens of a name: the text between `[`, `]` and `.`, empties dropped.
pub(crate) fn tokens(name: &str) -> impl DoubleEndedIterator<Item = &str> {
    name.split(['[', ']', '.']).filter(|t| !t.is_empty())
}

/// A MongoDB operator: `$` and a letter (`$ne`, `$where`, `$bitsAllClear`,
/// `$set`: every operator, known or future), but not JSON Schema's
/// keywords. `$` alone or before a digit (prices) is not one.
fn is_operator(t: &str) -> bool {
    let mut c = t.chars();
    c.next() == Some('$')
        && c.next().is_some_and(|c| c.is_ascii_alphabetic())
        && !NOT_OPERATORS.contains(&t)
}

/// Judge the tokens of one name (in order); `after_constructor`: the name
/// sits directly under a `constructor` key (a JSON member's parent);
/// `variable` names it for a finding (built only when there is one).
pub(crate) fn check<'a>(
    tokens: impl Iterator<Item = &'a str>,
    after_constructor: bool,
    findings: &mut Vec<Finding>,
    variable: &dyn Fn() -> String,
) {
    let mut operator = None;
    let mut proto = false;
    let mut constructor = after_constructor;
    for t in tokens {
        if operator.is_none() && is_operator(t) {
            operator = Some(t);
        }
        match t {
            "__proto__" => proto = true,
            t if PROTOTYPE_METHODS.contains(&t) => proto = true,
            "constructor" => constructor = true,
            "prototype" if constructor => proto = true,
            _ => {}
        }
    }
    if let Some(op) = operator {
        let op: String = op.chars().take(32).collect();
        findings.push(Finding {
            rule: Rule::NoSqlOperator,
            variable: variable(),
            reason: format!("MongoDB operator {op} as a key"),
        });
    }
    if proto {
        findings.push(Finding {
            rule: Rule::PrototypePollution,
            variable: variable(),
            reason: "__proto__, constructor.prototype or an Object.prototype method in a key"
                .into(),
        });
    }
}
