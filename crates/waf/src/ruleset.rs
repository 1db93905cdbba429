//! Loading rule files into a [`RuleSet`]: directives in order, chains
//! joined, default actions applied, target updates and removals resolved,
//! every reference checked. Anything the engine does not implement is an
//! error naming the file and line; nothing is skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::action::{Actions, Disruptive, id_range};
use crate::lexer::{Directive, directives};
use crate::operator::{Op, Operator};
use crate::variable::{Target, parse_targets};
use crate::{EngineMode, LoadError};

/// One condition of a rule: its own in a chain.
#[derive(Clone, Debug)]
pub struct Link {
    pub targets: Vec<Target>,
    pub operator: Operator,
    /// `t:`, `capture`, `multiMatch`, `setvar`, `ctl`... of this link (the
    /// head's metadata lives in [`Rule::actions`]).
    pub actions: Actions,
    pub line: u32,
    /// Its transformation chain, interned when loading (0: none): values
    /// through the same chain are cached per transaction.
    pub chain: u32,
    /// Set when loading is done, unique in the process, for links whose
    /// answer depends on the value alone (see [`crate::memo`]); 0 for the
    /// others. It stands for this link's operator, transformations and
    /// `multiMatch`: only the loader sets them.
    pub(crate) memo_id: u64,
}

impl Link {
    /// Whether the link's answer for a value depends on the value alone and
    /// a miss changes nothing: an operator without a macro in its argument,
    /// and not a negated one that captures (`!@rx (a)` writes TX:1 when the
    /// pattern matches, which is the link's miss).
    fn pure(&self) -> bool {
        use crate::operator::{Num, Op};
        let literal = |m: &crate::action::Macro| {
            m.0.iter()
                .all(|p| matches!(p, crate::action::Part::Text(_)))
        };
        !(self.actions.capture && self.operator.negated)
            && match &self.operator.op {
                Op::Rx(..)
                | Op::Pm(_)
                | Op::ValidateByteRange(_)
                | Op::ValidateUrlEncoding
                | Op::ValidateUtf8Encoding
                | Op::IpMatch(_)
                | Op::DetectSqli
                | Op::DetectXss => true,
                Op::Eq(n) | Op::Ge(n) | Op::Gt(n) | Op::Le(n) | Op::Lt(n) => {
                    matches!(n, Num::Const(_))
                }
                Op::Streq(m)
                | Op::BeginsWith(m)
                | Op::EndsWith(m)
                | Op::Contains(m)
                | Op::Within(m) => literal(m),
                Op::UnconditionalMatch => false,
            }
    }
}

/// A rule: `SecRule` or `SecAction`, with the links chained to it.
#[derive(Clone, Debug)]
pub struct Rule {
    /// 0 for none (allowed for `SecAction`s of a configuration, never in CRS).
    pub id: u32,
    pub phase: u8,
    pub file: Arc<str>,
    pub line: u32,
    /// The head's actions, with the phase's default actions merged in.
    pub actions: Actions,
    pub links: Vec<Link>,
}

impl Rule {
    /// The disruptive action the rule takes when all its links match.
    pub fn disruptive(&self) -> Disruptive {
        self.actions.disruptive.unwrap_or(Disruptive::Pass)
    }
    pub fn logs(&self) -> bool {
        self.actions.log.unwrap_or(true)
    }
    pub fn has_tag(&self, tag: &str) -> bool {
        self.actions.tags.iter().any(|t| t == tag)
    }
}

/// An entry of a phase's rule list.
#[derive(Clone, Debug)]
pub enum Entry {
    Rule(Arc<Rule>),
    Marker(Arc<str>),
}

/// A loaded rule set: per phase (1–5), its entries in load order.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub phases: [Vec<Entry>; 5],
    /// What `block` does in each phase: the phase's `SecDefaultAction`
    /// disruptive action (`pass` when it has none, as ModSecurity).
    pub block: [Option<Disruptive>; 5],
    pub engine: Option<EngineMode>,
    pub component_signatures: Vec<String>,
    /// Links that did not match a value clients repeat (a clone starts
    /// empty).
    pub memo: crate::memo::Memo,
}

impl RuleSet {
    /// Every rule, in phase then load order.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.phases.iter().flatten().filter_map(|e| match e {
            Entry::Rule(r) => Some(r),
            Entry::Marker(_) => None,
        })
    }

    /// What `block` means in `phase`.
    pub fn block_action(&self, phase: u8) -> Disruptive {
        match self.block.get(usize::from(phase.saturating_sub(1))) {
            Some(Some(Disruptive::Block)) | Some(None) | None => Disruptive::Pass,
            Some(Some(d)) => *d,
        }
    }

    pub fn rule(&self, id: u32) -> Option<&Arc<Rule>> {
        self.rules().find(|r| r.id == id)
    }

    /// Load `files` in order (CRS: the setup file, then `rules/*.conf`
    /// sorted). `@pmFromFile` data files are read relative to each file.
    pub fn load(files: &[PathBuf]) -> Result<RuleSet, LoadError> {
        let mut b = Builder::default();
        for f in files {
            let text = std::fs::read_to_string(f)
                .map_err(|e| LoadError::bare(format!("{}: cannot read: {e}", f.display())))?;
            let dir = f.parent().unwrap_or(Path::new(".")).to_path_buf();
            b.text(&text, &f.display().to_string(), &dir)?;
        }
        b.finish()
    }

    /// Load configuration text (`name` is what errors call it; `dir` is
    /// where `@pmFromFile` looks).
    pub fn from_text(text: &str, name: &str, dir: &Path) -> Result<RuleSet, LoadError> {
        let mut b = Builder::default();
        b.text(text, name, dir)?;
        b.finish()
    }

    /// Several texts in order (a configuration, then rule files).
    pub fn from_texts(texts: &[(&str, &str)], dir: &Path) -> Result<RuleSet, LoadError> {
        let mut b = Builder::default();
        for (name, text) in texts {
            b.text(text, name, dir)?;
        }
        b.finish()
    }
}

#[derive(Default)]
struct Builder {
    set: RuleSet,
    defaults: HashMap<u8, Actions>,
    /// A rule whose last link said `chain`: the next `SecRule` joins it.
    open: Option<Rule>,
    /// Every rule id, with where it was defined.
    ids: HashMap<u32, (Arc<str>, u32)>,
    /// Each marker's name, with the number of directives read before it.
    markers: HashMap<String, usize>,
    /// skipAfter targets to check once everything is loaded.
    /// `skipAfter` targets: the marker, where, and the directives read before.
    skip_targets: Vec<(String, Arc<str>, u32, usize)>,
    /// Directives read so far.
    read: usize,
    /// Transformation chains seen, by their id (from 1).
    chains: HashMap<Vec<crate::transform::Transform>, u32>,
}

impl Builder {
    fn text(&mut self, text: &str, name: &str, dir: &Path) -> Result<(), LoadError> {
        let file: Arc<str> = Arc::from(name);
        for d in directives(text, &file)? {
            self.directive(&d, dir)
                .map_err(|m| LoadError::at(&d.file, d.line, m))?;
        }
        if let Some(r) = &self.open {
            return Err(LoadError::at(
                &r.file,
                r.line,
                "a chained rule has no rule after it in its file",
            ));
        }
        Ok(())
    }

    fn directive(&mut self, d: &Directive, dir: &Path) -> Result<(), String> {
        self.read += 1;
        let args = |n: std::ops::RangeInclusive<usize>| -> Result<(), String> {
            if n.contains(&d.args.len()) {
                Ok(())
            } else {
                Err(format!(
                    "{} takes {} argument(s), not {}",
                    d.name,
                    if n.start() == n.end() {
                        n.start().to_string()
                    } else {
                        format!("{} to {}", n.start(), n.end())
                    },
                    d.args.len()
                ))
            }
        };
        if self.open.is_some() && d.name != "SecRule" {
            return Err(format!(
                "{} right after a rule with `chain`: the chain needs a SecRule",
                d.name
            ));
        }
        match d.name.as_str() {
            "SecRule" => {
                args(2..=3)?;
                let targets = parse_targets(&d.args[0])?;
                let operator = Operator::parse(&d.args[1], dir)?;
                let actions = Actions::parse(d.args.get(2).map(String::as_str).unwrap_or(""))?;
                self.rule(d, targets, operator, actions)
            }
            "SecAction" => {
                args(1..=1)?;
                let actions = Actions::parse(&d.args[0])?;
                if actions.chain {
                    return Err("SecAction cannot chain".into());
                }
                let operator = Operator::parse("@unconditionalMatch", dir)?;
                self.rule(d, Vec::new(), operator, actions)
            }
            "SecMarker" => {
                args(1..=1)?;
                let name: Arc<str> = Arc::from(d.args[0].as_str());
                self.markers.insert(d.args[0].clone(), self.read);
                for p in &mut self.set.phases {
                    p.push(Entry::Marker(name.clone()));
                }
                Ok(())
            }
            "SecDefaultAction" => {
                args(1..=1)?;
                let a = Actions::parse(&d.args[0])?;
                let phase = a.phase.ok_or("SecDefaultAction needs a phase")?;
                if a.id.is_some() || a.chain || !a.setvars.is_empty() || a.skip_after.is_some() {
                    return Err("SecDefaultAction takes no id, chain, setvar or skipAfter".into());
                }
                // `block` in every rule would mean allow: a match would end
                // the evaluation and pass the request
                if a.disruptive == Some(Disruptive::Allow) {
                    return Err(
                        "SecDefaultAction: allow is not a default action (pass, deny, drop)".into(),
                    );
                }
                self.set.block[usize::from(phase - 1)] = a.disruptive;
                self.defaults.insert(phase, a);
                Ok(())
            }
            "SecComponentSignature" => {
                args(1..=1)?;
                self.set.component_signatures.push(d.args[0].clone());
                Ok(())
            }
            "SecRuleEngine" => {
                args(1..=1)?;
                self.set.engine = Some(EngineMode::parse(&d.args[0])?);
                Ok(())
            }
            "SecRuleUpdateTargetById" => {
                args(2..=3)?;
                if d.args.len() == 3 {
                    return Err(
                        "SecRuleUpdateTargetById with a replaced target is not supported".into(),
                    );
                }
                let (lo, hi) = id_range(&d.args[0])?;
                let targets = parse_targets(&d.args[1])?;
                self.update_rules(lo, hi, |r| {
                    Arc::make_mut(r).links[0]
                        .targets
                        .extend(targets.iter().cloned());
                })
            }
            "SecRuleRemoveById" => {
                args(1..=usize::MAX)?;
                let ranges: Vec<(u32, u32)> = d
                    .args
                    .iter()
                    .map(|a| id_range(a))
                    .collect::<Result<_, _>>()?;
                for p in &mut self.set.phases {
                    p.retain(|e| match e {
                        Entry::Rule(r) => {
                            !ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&r.id))
                        }
                        Entry::Marker(_) => true,
                    });
                }
                Ok(())
            }
            "SecRuleRemoveByTag" => {
                args(1..=1)?;
                let tag = &d.args[0];
                for p in &mut self.set.phases {
                    p.retain(|e| match e {
                        Entry::Rule(r) => !r.has_tag(tag),
                        Entry::Marker(_) => true,
                    });
                }
                Ok(())
            }
            other if other.starts_with("Sec") => Err(format!(
                "unsupported directive {other}: engine settings (body access and limits, audit logging, data directories) are the gateway's configuration, not the rule files'"
            )),
            other => Err(format!("unknown directive {other:?}")),
        }
    }

    fn update_rules(
        &mut self,
        lo: u32,
        hi: u32,
        mut f: impl FnMut(&mut Arc<Rule>),
    ) -> Result<(), String> {
        let mut found = false;
        for p in &mut self.set.phases {
            for e in p.iter_mut() {
                if let Entry::Rule(r) = e
                    && (lo..=hi).contains(&r.id)
                {
                    f(r);
                    found = true;
                }
            }
        }
        if found {
            Ok(())
        } else {
            Err(format!(
                "no rule with id {lo}{} is loaded",
                if lo == hi {
                    String::new()
                } else {
                    format!("-{hi}")
                }
            ))
        }
    }

    fn rule(
        &mut self,
        d: &Directive,
        targets: Vec<Target>,
        operator: Operator,
        actions: Actions,
    ) -> Result<(), String> {
        if let Some(after) = &actions.skip_after {
            self.skip_targets
                .push((after.clone(), d.file.clone(), d.line, self.read));
        }
        if matches!(operator.op, Op::Rx(..)) && targets.is_empty() {
            return Err("a SecRule needs targets".into());
        }
        if targets.iter().all(|t| t.exclude) && !targets.is_empty() {
            return Err("a rule whose targets are all exclusions inspects nothing".into());
        }
        if let Some(mut head) = self.open.take() {
            // a chained link: no metadata of its own
            if actions.id.is_some()
                || actions.phase.is_some()
                || actions.disruptive.is_some_and(|x| x != Disruptive::Pass)
                || actions.skip_after.is_some()
                || actions.skip > 0
            {
                return Err(
                    "a chained rule cannot set id, phase, a disruptive action, skip or skipAfter"
                        .into(),
                );
            }
            let chain = actions.chain;
            let mut actions = actions;
            self.merge_defaults(head.phase, &mut actions);
            let chain_id = self.chain_id(&actions.transforms);
            head.links.push(Link {
                targets,
                operator,
                actions,
                line: d.line,
                chain: chain_id,
                memo_id: 0,
            });
            if chain {
                self.open = Some(head);
            } else {
                self.push(head);
            }
            return Ok(());
        }
        let id = match actions.id {
            Some(id) => id,
            None => return Err("a rule needs an id".into()),
        };
        if let Some((file, line)) = self.ids.get(&id) {
            return Err(format!("duplicate rule id {id} (first at {file}:{line})"));
        }
        self.ids.insert(id, (d.file.clone(), d.line));
        let phase = actions.phase.unwrap_or(2);
        let mut actions = actions;
        self.merge_defaults(phase, &mut actions);
        let link_actions = Actions {
            transforms: actions.transforms.clone(),
            t_none: actions.t_none,
            capture: actions.capture,
            multi_match: actions.multi_match,
            setvars: actions.setvars.clone(),
            ctls: actions.ctls.clone(),
            ..Actions::default()
        };
        // what acts per link lives in the link; the head keeps the metadata
        actions.transforms.clear();
        actions.setvars.clear();
        actions.ctls.clear();
        let chain = actions.chain;
        let rule = Rule {
            id,
            phase,
            file: d.file.clone(),
            line: d.line,
            actions,
            links: vec![Link {
                targets,
                operator,
                chain: self.chain_id(&link_actions.transforms),
                actions: link_actions,
                line: d.line,
                memo_id: 0,
            }],
        };
        if chain {
            self.open = Some(rule);
        } else {
            self.push(rule);
        }
        Ok(())
    }

    fn chain_id(&mut self, t: &[crate::transform::Transform]) -> u32 {
        if t.is_empty() {
            return 0;
        }
        let next = u32::try_from(self.chains.len() + 1).unwrap_or(u32::MAX);
        *self.chains.entry(t.to_vec()).or_insert(next)
    }

    /// The phase's `SecDefaultAction`: its transformations first (unless
    /// `t:none`), its disruptive action and logging where the rule has none.
    fn merge_defaults(&self, phase: u8, a: &mut Actions) {
        let Some(def) = self.defaults.get(&phase) else {
            return;
        };
        if !a.t_none && !def.transforms.is_empty() {
            let mut t = def.transforms.clone();
            t.append(&mut a.transforms);
            a.transforms = t;
        }
        if a.disruptive.is_none() {
            a.disruptive = def.disruptive;
        }
        if a.log.is_none() {
            a.log = def.log;
        }
        if a.auditlog.is_none() {
            a.auditlog = def.auditlog;
        }
    }

    fn push(&mut self, rule: Rule) {
        let p = usize::from(rule.phase - 1);
        self.set.phases[p].push(Entry::Rule(Arc::new(rule)));
    }

    fn finish(mut self) -> Result<RuleSet, LoadError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        for e in self.set.phases.iter_mut().flatten() {
            let Entry::Rule(r) = e else { continue };
            for link in &mut Arc::make_mut(r).links {
                link.memo_id = if link.pure() {
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                } else {
                    0
                };
            }
        }
        // a skip ends at a marker only, as in libmodsecurity 3: a rule id
        // (or a misspelt marker) would skip the rest of the phase, anomaly
        // evaluation included, so it is refused
        for (target, file, line, at) in &self.skip_targets {
            if self.markers.get(target).is_none_or(|m| m <= at) {
                return Err(LoadError::at(
                    file,
                    *line,
                    format!(
                        "skipAfter:{target}: no SecMarker of that name follows the rule (a skip ends only at a marker: it would skip the rest of the phase)"
                    ),
                ));
            }
        }
        Ok(self.set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<RuleSet, String> {
        RuleSet::from_text(text, "t.conf", Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn rules_chains_markers_and_defaults() {
        let set = load(
            r#"
SecDefaultAction "phase:2,log,auditlog,pass,t:lowercase"
SecRule ARGS "@rx a" "id:1,phase:2,block,t:none,chain"
    SecRule ARGS_NAMES "@rx b" "t:urlDecodeUni,setvar:tx.x=+1"
SecRule ARGS "@rx c" "id:2,phase:2,t:urlDecodeUni,skipAfter:END"
SecMarker END
SecAction "id:3,phase:1,nolog,pass,setvar:tx.y=1"
SecRuleUpdateTargetById 1 "!ARGS:safe"
"#,
        )
        .unwrap();
        let r1 = set.rule(1).unwrap();
        assert_eq!(r1.links.len(), 2);
        assert_eq!(r1.disruptive(), Disruptive::Block);
        assert!(
            r1.links[0].actions.transforms.is_empty(),
            "t:none drops the default's"
        );
        assert_eq!(
            r1.links[1].actions.transforms.len(),
            2,
            "the default's, then its own"
        );
        assert_eq!(
            r1.links[0].targets.len(),
            2,
            "the update added an exclusion"
        );
        let r2 = set.rule(2).unwrap();
        assert_eq!(r2.disruptive(), Disruptive::Pass);
        assert_eq!(r2.links[0].actions.transforms.len(), 2);
        assert!(!set.rule(3).unwrap().logs());
        assert_eq!(set.phases[0].len(), 2, "phase 1: the marker and rule 3");
        assert_eq!(set.phases[1].len(), 3, "phase 2: rules 1, 2 and the marker");
    }

    #[test]
    fn load_errors_name_the_file_and_line() {
        for (text, err) in [
            (
                "\nSecRule ARGS \"@rx a\" \"phase:2\"",
                "t.conf:2: a rule needs an id",
            ),
            (
                "SecRule ARGS \"@rx a\" \"id:1\"\nSecRule ARGS \"@rx a\" \"id:1\"",
                "t.conf:2: duplicate rule id 1 (first at t.conf:1)",
            ),
            (
                "SecRule ARGS \"@foo a\" \"id:1\"",
                "t.conf:1: unsupported operator @foo",
            ),
            (
                "SecRule ARGS \"@rx a\" \"id:1,chain\"",
                "t.conf:1: a chained rule has no rule after it in its file",
            ),
            (
                "SecRule ARGS \"@rx a\" \"id:1,chain\"\nSecMarker X",
                "t.conf:2: SecMarker right after a rule with `chain`: the chain needs a SecRule",
            ),
            (
                "SecRule ARGS \"@rx a\" \"id:1,chain\"\nSecRule ARGS \"@rx a\" \"id:2\"",
                "t.conf:2: a chained rule cannot set id, phase, a disruptive action, skip or skipAfter",
            ),
            (
                "SecRule ARGS \"@rx a\" \"id:1,skipAfter:NOWHERE\"",
                "t.conf:1: skipAfter:NOWHERE: no SecMarker of that name follows the rule (a skip ends only at a marker: it would skip the rest of the phase)",
            ),
            (
                "SecRuleUpdateTargetById 9 \"!ARGS:x\"",
                "t.conf:1: no rule with id 9 is loaded",
            ),
            (
                "SecRequestBodyAccess On",
                "t.conf:1: unsupported directive SecRequestBodyAccess: engine settings (body access and limits, audit logging, data directories) are the gateway's configuration, not the rule files'",
            ),
            (
                "Include other.conf",
                "t.conf:1: unknown directive \"Include\"",
            ),
            (
                "SecRule ARGS",
                "t.conf:1: SecRule takes 2 to 3 argument(s), not 1",
            ),
        ] {
            assert_eq!(load(text).unwrap_err(), err, "{text}");
        }
    }
}
