//! Rule actions (`id:1,phase:2,deny,t:lowercase,setvar:'tx.x=+1',...`)
//! and macros (`%{tx.score}`, `%{MATCHED_VAR}`).

use crate::transform::Transform;
use crate::variable::Variable;

/// Text with `%{VAR}` / `%{VAR.key}` references, expanded per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Macro(pub Vec<Part>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// A variable, with the key for a collection (lowercased: collection
    /// keys are case-insensitive).
    Var(Variable, Option<String>),
}

impl Macro {
    pub fn parse(text: &str) -> Result<Macro, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("%{") {
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated macro in {text:?}"))?;
            let inner = &after[..end];
            let (name, key) = match inner.split_once('.') {
                Some((n, k)) => (n, Some(k.to_ascii_lowercase())),
                None => (inner, None),
            };
            let var = Variable::parse(name)
                .ok_or_else(|| format!("unknown variable {name:?} in macro %{{{inner}}}"))?;
            if key.is_some() && !var.is_collection() {
                return Err(format!(
                    "{name} is not a collection (in macro %{{{inner}}})"
                ));
            }
            parts.push(Part::Var(var, key));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Macro(parts))
    }

    /// The text when it holds no reference.
    pub fn literal(&self) -> Option<String> {
        let mut s = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => s.push_str(t),
                Part::Var(..) => return None,
            }
        }
        Some(s)
    }
}

/// What a rule does when it matches and is not `pass`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disruptive {
    Pass,
    Block,
    Deny,
    Drop,
    Allow,
}

/// `setvar` operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetVar {
    pub collection: Variable,
    /// The key, lowercased; may itself hold a macro.
    pub key: Macro,
    pub op: SetOp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetOp {
    Set(Macro),
    Add(Macro),
    Sub(Macro),
    Delete,
}

/// `ctl` actions: per-transaction changes of the engine's configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum Ctl {
    RuleEngine(crate::EngineMode),
    RuleRemoveById(Vec<(u32, u32)>),
    RuleRemoveByTag(String),
    RuleRemoveTargetById(u32, crate::variable::Target),
    RuleRemoveTargetByTag(String, crate::variable::Target),
    RequestBodyProcessor(String),
    ForceRequestBodyVariable(bool),
    AuditEngine(String),
}

/// Everything a rule's action list says. Metadata actions apply to the
/// head of a chain only; `t:`, `capture`, `multiMatch`, `setvar` and `ctl`
/// apply to each link.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Actions {
    pub id: Option<u32>,
    pub phase: Option<u8>,
    pub msg: Option<Macro>,
    pub logdata: Option<Macro>,
    pub severity: Option<u8>,
    pub tags: Vec<String>,
    pub ver: Option<String>,
    pub disruptive: Option<Disruptive>,
    pub status: Option<u16>,
    pub chain: bool,
    pub log: Option<bool>,
    pub auditlog: Option<bool>,
    pub capture: bool,
    pub multi_match: bool,
    /// `t:none` seen: the default action's transformations are dropped.
    pub t_none: bool,
    pub transforms: Vec<Transform>,
    pub setvars: Vec<SetVar>,
    pub ctls: Vec<Ctl>,
    pub skip: u32,
    pub skip_after: Option<String>,
    /// `initcol:ip=...`: the collection named.
    pub initcol: Vec<(Variable, Macro)>,
}

/// Split an action list on commas outside single quotes.
fn split(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ':' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let name = name.trim().to_string();
        let value = if chars.peek() == Some(&':') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ') {
                chars.next();
            }
            let mut v = String::new();
            if chars.peek() == Some(&'\'') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == '\\' && chars.peek() == Some(&'\'') {
                        v.push('\'');
                        chars.next();
                    } else if c == '\'' {
                        closed = true;
                        break;
                    } else {
                        v.push(c);
                    }
                }
                if !closed {
                    return Err(format!("unterminated quoted value of action {name:?}"));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                v = v.trim_end().to_string();
            }
            Some(v)
        } else {
            None
        };
        out.push((name, value));
    }
}

fn need<'a>(name: &str, v: &'a Option<String>) -> Result<&'a str, String> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("action {name} needs a value"))
}

/// A rule id or an id range (`920540`, `1-999999`).
pub(crate) fn id_range(s: &str) -> Result<(u32, u32), String> {
    let num = |x: &str| {
        x.trim()
            .parse::<u32>()
            .map_err(|_| format!("invalid rule id {x:?}"))
    };
    match s.split_once('-') {
        Some((a, b)) => Ok((num(a)?, num(b)?)),
        None => {
            let n = num(s)?;
            Ok((n, n))
        }
    }
}

fn severity(s: &str) -> Result<u8, String> {
    const NAMES: [&str; 8] = [
        "EMERGENCY",
        "ALERT",
        "CRITICAL",
        "ERROR",
        "WARNING",
        "NOTICE",
        "INFO",
        "DEBUG",
    ];
    if let Ok(n) = s.parse::<u8>()
        && n < 8
    {
        return Ok(n);
    }
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(s))
        .map(|p| p as u8)
        .ok_or_else(|| format!("invalid severity {s:?}"))
}

fn parse_setvar(v: &str) -> Result<SetVar, String> {
    let (lhs, op) = if let Some(name) = v.strip_prefix('!') {
        (name, SetOp::Delete)
    } else if let Some((l, r)) = v.split_once("=+") {
        (l, SetOp::Add(Macro::parse(r)?))
    } else if let Some((l, r)) = v.split_once("=-") {
        (l, SetOp::Sub(Macro::parse(r)?))
    } else if let Some((l, r)) = v.split_once('=') {
        (l, SetOp::Set(Macro::parse(r)?))
    } else {
        // `setvar:tx.flag` sets it to 1? ModSecurity: an empty value
        (v, SetOp::Set(Macro(Vec::new())))
    };
    let (coll, key) = lhs
        .split_once('.')
        .ok_or_else(|| format!("setvar {v:?}: expected collection.key"))?;
    let collection = Variable::parse(coll)
        .filter(|c| matches!(c, Variable::Tx | Variable::Ip | Variable::Global))
        .ok_or_else(|| format!("setvar {v:?}: only TX, IP and GLOBAL can be set"))?;
    Ok(SetVar {
        collection,
        key: Macro::parse(&key.to_ascii_lowercase())?,
        op,
    })
}

fn parse_ctl(v: &str) -> Result<Ctl, String> {
    let (name, value) = v
        .split_once('=')
        .ok_or_else(|| format!("ctl {v:?}: expected name=value"))?;
    let on_off = |s: &str| match s.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("ctl {name}: expected On or Off, not {s:?}")),
    };
    let target_of = |s: &str| -> Result<crate::variable::Target, String> {
        let mut t = crate::variable::parse_targets(s)?;
        if t.len() != 1 {
            return Err(format!("ctl {name}: expected one target, not {s:?}"));
        }
        Ok(t.remove(0))
    };
    Ok(match name {
        "ruleEngine" => Ctl::RuleEngine(crate::EngineMode::parse(value)?),
        "ruleRemoveById" => Ctl::RuleRemoveById(
            value
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(id_range)
                .collect::<Result<_, _>>()?,
        ),
        "ruleRemoveByTag" => Ctl::RuleRemoveByTag(value.to_string()),
        "ruleRemoveTargetById" => {
            let (id, t) = value
                .split_once(';')
                .ok_or_else(|| format!("ctl {name}: expected id;TARGET"))?;
            Ctl::RuleRemoveTargetById(id_range(id)?.0, target_of(t)?)
        }
        "ruleRemoveTargetByTag" => {
            let (tag, t) = value
                .split_once(';')
                .ok_or_else(|| format!("ctl {name}: expected tag;TARGET"))?;
            let mut target = target_of(t)?;
            target.exclude = true;
            Ctl::RuleRemoveTargetByTag(tag.to_string(), target)
        }
        "requestBodyProcessor" => Ctl::RequestBodyProcessor(value.to_ascii_uppercase()),
        "forceRequestBodyVariable" => Ctl::ForceRequestBodyVariable(on_off(value)?),
        "auditEngine" => Ctl::AuditEngine(value.to_string()),
        _ => return Err(format!("unsupported ctl {name:?}")),
    })
}

impl Actions {
    /// Parse an action list.
    pub fn parse(text: &str) -> Result<Actions, String> {
        let mut a = Actions::default();
        for (name, value) in split(text)? {
            match name.as_str() {
                "id" => {
                    let v = need("id", &value)?;
                    let id = v
                        .parse::<u32>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("invalid rule id {v:?}"))?;
                    a.id = Some(id);
                }
                "phase" => {
                    let v = need("phase", &value)?;
                    a.phase = Some(match v {
                        "request" => 2,
                        "response" => 4,
                        "logging" => 5,
                        _ => v
                            .parse::<u8>()
                            .ok()
                            .filter(|p| (1..=5).contains(p))
                            .ok_or_else(|| format!("invalid phase {v:?}"))?,
                    });
                }
                "msg" => a.msg = Some(Macro::parse(need("msg", &value)?)?),
                "logdata" => a.logdata = Some(Macro::parse(need("logdata", &value)?)?),
                "severity" => a.severity = Some(severity(need("severity", &value)?)?),
                "tag" => a.tags.push(need("tag", &value)?.to_string()),
                "ver" => a.ver = Some(need("ver", &value)?.to_string()),
                "rev" | "maturity" | "accuracy" => {
                    need(&name, &value)?;
                }
                "pass" => a.disruptive = Some(Disruptive::Pass),
                "block" => a.disruptive = Some(Disruptive::Block),
                "deny" => a.disruptive = Some(Disruptive::Deny),
                "drop" => a.disruptive = Some(Disruptive::Drop),
                "allow" => {
                    if value.is_some() {
                        return Err("allow:phase and allow:request are not supported".into());
                    }
                    a.disruptive = Some(Disruptive::Allow);
                }
                "status" => {
                    let v = need("status", &value)?;
                    a.status = Some(
                        v.parse::<u16>()
                            .ok()
                            .filter(|s| (100..=599).contains(s))
                            .ok_or_else(|| format!("invalid status {v:?}"))?,
                    );
                }
                "chain" => a.chain = true,
                "log" => a.log = Some(true),
                "nolog" => a.log = Some(false),
                "auditlog" => a.auditlog = Some(true),
                "noauditlog" => a.auditlog = Some(false),
                "capture" => a.capture = true,
                "multiMatch" => a.multi_match = true,
                "t" => {
                    let v = need("t", &value)?;
                    if v == "none" {
                        a.t_none = true;
                        a.transforms.clear();
                    } else {
                        a.transforms.push(
                            Transform::parse(v)
                                .ok_or_else(|| format!("unsupported transformation t:{v}"))?,
                        );
                    }
                }
                "setvar" => a.setvars.push(parse_setvar(need("setvar", &value)?)?),
                "ctl" => a.ctls.push(parse_ctl(need("ctl", &value)?)?),
                "skip" => {
                    let v = need("skip", &value)?;
                    a.skip = v
                        .parse::<u32>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("invalid skip {v:?}"))?;
                }
                "skipAfter" => a.skip_after = Some(need("skipAfter", &value)?.to_string()),
                "initcol" => {
                    let v = need("initcol", &value)?;
                    let (c, key) = v
                        .split_once('=')
                        .ok_or_else(|| format!("initcol {v:?}: expected collection=key"))?;
                    let coll = Variable::parse(c)
                        .filter(|c| matches!(c, Variable::Ip | Variable::Global))
                        .ok_or_else(|| format!("initcol {v:?}: only IP and GLOBAL"))?;
                    a.initcol.push((coll, Macro::parse(key)?));
                }
                other => return Err(format!("unsupported action {other:?}")),
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_lists_parse() {
        let a = Actions::parse(
            "id:942100,phase:2,block,capture,t:none,t:utf8toUnicode,t:urlDecodeUni,msg:'SQL Injection Attack Detected via libinjection',logdata:'Matched Data: %{TX.0} found within %{MATCHED_VAR_NAME}: %{MATCHED_VAR}',tag:'attack-sqli',ver:'OWASP_CRS/4.28.0',severity:'CRITICAL',setvar:'tx.sql_injection_score=+%{tx.critical_anomaly_score}',setvar:'tx.inbound_anomaly_score_pl1=+%{tx.critical_anomaly_score}'",
        )
        .unwrap();
        assert_eq!(a.id, Some(942100));
        assert_eq!(a.phase, Some(2));
        assert_eq!(a.disruptive, Some(Disruptive::Block));
        assert!(a.capture && a.t_none);
        assert_eq!(a.transforms.len(), 2);
        assert_eq!(a.severity, Some(2));
        assert_eq!(a.tags, vec!["attack-sqli"]);
        assert_eq!(a.setvars.len(), 2);
        assert_eq!(
            a.setvars[0].op,
            SetOp::Add(Macro(vec![Part::Var(
                Variable::Tx,
                Some("critical_anomaly_score".into())
            )]))
        );
        let m = a.logdata.unwrap();
        assert_eq!(m.0.len(), 6);
        // quotes inside quoted values
        let a = Actions::parse(r"id:1,msg:'lama\'s shell',  phase:1").unwrap();
        assert_eq!(a.msg.unwrap().literal().unwrap(), "lama's shell");
        assert_eq!(a.phase, Some(1));
    }

    #[test]
    fn ctl_forms() {
        let a = Actions::parse(
            "ctl:ruleRemoveById=1-999999,ctl:ruleRemoveTargetByTag=xss-perf-disable;REQUEST_FILENAME,ctl:ruleEngine=DetectionOnly,ctl:forceRequestBodyVariable=On",
        )
        .unwrap();
        assert_eq!(a.ctls[0], Ctl::RuleRemoveById(vec![(1, 999999)]));
        assert!(
            matches!(&a.ctls[1], Ctl::RuleRemoveTargetByTag(t, tg) if t == "xss-perf-disable" && tg.variable == Variable::RequestFilename)
        );
        assert_eq!(a.ctls[2], Ctl::RuleEngine(crate::EngineMode::DetectionOnly));
        assert_eq!(a.ctls[3], Ctl::ForceRequestBodyVariable(true));
    }

    #[test]
    fn unknown_or_malformed_actions_are_errors() {
        for (t, e) in [
            ("id:1,exec:/bin/sh", "unsupported action \"exec\""),
            ("id:0", "invalid rule id \"0\""),
            ("phase:9", "invalid phase \"9\""),
            ("t:rot13", "unsupported transformation t:rot13"),
            ("ctl:debugLogLevel=9", "unsupported ctl \"debugLogLevel\""),
            (
                "setvar:env.x=1",
                "setvar \"env.x=1\": only TX, IP and GLOBAL can be set",
            ),
            ("msg:'open", "unterminated quoted value of action \"msg\""),
            ("severity:LOUD", "invalid severity \"LOUD\""),
            (
                "msg:'%{nope}'",
                "unknown variable \"nope\" in macro %{nope}",
            ),
        ] {
            assert_eq!(Actions::parse(t).unwrap_err(), e, "{t}");
        }
    }
}
