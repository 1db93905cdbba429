//! Checks on parameter names: MongoDB operators and prototype pollution.

use crate::{Arg, Finding, Rule, Source};

/// MongoDB query, update and expression operators that change what a query
/// matches or does when a client's object reaches `find`, `update` or
/// `$match` unchanged. `$`-keys that are not operators (JSON Schema's
/// `$schema`, `$ref`, `$id`) are not listed.
const OPERATORS: &[&str] = &[
    "$where",
    "$ne",
    "$eq",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$regex",
    "$options",
    "$exists",
    "$type",
    "$expr",
    "$or",
    "$and",
    "$nor",
    "$not",
    "$elemMatch",
    "$all",
    "$size",
    "$mod",
    "$text",
    "$search",
    "$jsonSchema",
    "$function",
    "$accumulator",
    "$lookup",
    "$unionWith",
    "$merge",
    "$out",
    "$set",
    "$unset",
    "$inc",
    "$push",
    "$pull",
    "$rename",
    "$setOnInsert",
    "$addToSet",
    "$currentDate",
];

/// The segments to judge for one argument, each also split at `.` (qs's
/// `allowDots`, lodash-style paths): for JSON only the last key (every
/// prefix of a JSON path is an argument of its own), for the query and
/// forms every segment of the name.
fn judged(arg: &Arg) -> Vec<&str> {
    let segs: &[String] = match arg.source {
        Source::Json => match arg.segments.last() {
            Some(_) => &arg.segments[arg.segments.len() - 1..],
            None => &[],
        },
        Source::Query | Source::Form => &arg.segments,
    };
    segs.iter().flat_map(|s| s.split('.')).collect()
}

pub(crate) fn check(arg: &Arg, findings: &mut Vec<Finding>) {
    let parts = judged(arg);
    if let Some(op) = parts.iter().find(|p| OPERATORS.contains(p)) {
        findings.push(Finding {
            rule: Rule::NoSqlOperator,
            variable: arg.variable(),
            reason: format!("MongoDB operator {op} as a key"),
        });
    }
    let proto = parts.contains(&"__proto__")
        || parts.windows(2).any(|w| w == ["constructor", "prototype"])
        // a JSON `prototype` key directly under `constructor`
        || (arg.source == Source::Json
            && parts.first() == Some(&"prototype")
            && arg.segments.len() >= 2
            && arg.segments[arg.segments.len() - 2]
                .split('.')
                .next_back()
                == Some("constructor"));
    if proto {
        findings.push(Finding {
            rule: Rule::PrototypePollution,
            variable: arg.variable(),
            reason: "__proto__ or constructor.prototype in a key".into(),
        });
    }
}
