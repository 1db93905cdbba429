//! Loading OWASP CRS the way it is deployed: the engine's own rules (body
//! processors by content type, body errors), the paranoia level and mode,
//! the setup file, then `rules/*.conf` in name order.

use std::path::{Path, PathBuf};

use crate::{LoadError, RuleSet};

/// The rules ModSecurity's recommended configuration adds around CRS:
/// JSON and XML body processors by content type (200000, 200001, 200006)
/// and refusing bodies that do not parse (200002, 200003).
pub const ENGINE_RULES: &str = r#"
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "^application/[a-z0-9.-]+[+]json" "id:200006,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',logdata:'%{reqbody_error_msg}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:200003,phase:2,t:none,log,deny,status:400,msg:'Multipart request body failed strict validation.'"
"#;

/// How CRS runs.
#[derive(Clone, Debug)]
pub struct CrsOptions {
    /// Blocking paranoia level, 1–4.
    pub paranoia: u8,
    /// `DetectionOnly` instead of `On`.
    pub detection_only: bool,
    /// Configuration text loaded after the setup file and before the rules
    /// (CRS's place for `SecAction`s that override its defaults, and for
    /// exclusions: "before CRS"), with the name errors give it.
    pub before_rules: Vec<(String, String)>,
    /// Loaded after the rules (`SecRuleUpdateTargetById`, removals).
    pub after_rules: Vec<(String, String)>,
}

impl Default for CrsOptions {
    fn default() -> Self {
        CrsOptions {
            paranoia: 1,
            detection_only: false,
            before_rules: Vec::new(),
            after_rules: Vec::new(),
        }
    }
}

/// The `*.conf` rule files of a CRS directory, in name order.
pub fn rule_files(crs_dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let dir = crs_dir.join("rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| LoadError::bare(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    Ok(files)
}

/// Check an operator's rule file meant to load around CRS (the gateway's
/// `[waf] before_crs` / `after_crs`), named `name`: it parses, and it sets
/// nothing for every request of every route. Refused, with the line:
/// `SecRuleEngine` and `SecDefaultAction` (the mode, and what CRS's `block`
/// means and whether its matches are logged, are settings of the whole rule
/// set), and `ctl:ruleEngine` in a `SecAction` (a rule that matches every
/// request: `SecRuleEngine` by another name). A `SecRule`'s own
/// `ctl:ruleEngine` applies to the requests it matches and is allowed.
pub fn check_tuning(name: &str, text: &str) -> Result<(), LoadError> {
    let file: std::sync::Arc<str> = std::sync::Arc::from(name);
    for d in crate::lexer::directives(text, &file)? {
        let why = if d.name.eq_ignore_ascii_case("SecRuleEngine") {
            "SecRuleEngine: the engine's mode is the route's setting (crs = \"detect\" or \"block\"), not a rule file's"
        } else if d.name.eq_ignore_ascii_case("SecDefaultAction") {
            "SecDefaultAction: CRS's default actions are its setup's (crs-setup.conf), not a tuning file's: they change what every rule's block means"
        } else if d.name.eq_ignore_ascii_case("SecAction")
            && d.args.iter().any(|a| {
                // as the loader reads them (quotes, spaces after the colon)
                crate::action::Actions::parse(a).is_ok_and(|a| {
                    a.ctls
                        .iter()
                        .any(|c| matches!(c, crate::action::Ctl::RuleEngine(_)))
                })
            })
        {
            "SecAction with ctl:ruleEngine: it would set the mode of every request on every route (condition it in a SecRule)"
        } else {
            continue;
        };
        return Err(LoadError::at(&file, d.line, why));
    }
    Ok(())
}

/// Load CRS from `crs_dir` (holding `crs-setup.conf.example` or
/// `crs-setup.conf`, and `rules/`).
pub fn load(crs_dir: &Path, opts: &CrsOptions) -> Result<RuleSet, LoadError> {
    if !(1..=4).contains(&opts.paranoia) {
        return Err(LoadError::bare(format!(
            "paranoia level {} is not 1 to 4",
            opts.paranoia
        )));
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| LoadError::bare(format!("{}: cannot read: {e}", p.display())))
    };
    let mut texts: Vec<(String, String)> = vec![
        ("engine rules".into(), ENGINE_RULES.into()),
        (
            "paranoia and mode".into(),
            format!(
                "SecRuleEngine {}\nSecAction \"id:900000,phase:1,pass,nolog,t:none,setvar:tx.blocking_paranoia_level={}\"\n",
                if opts.detection_only {
                    "DetectionOnly"
                } else {
                    "On"
                },
                opts.paranoia
            ),
        ),
    ];
    let setup = [
        crs_dir.join("crs-setup.conf"),
        crs_dir.join("crs-setup.conf.example"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| LoadError::bare(format!("{}: no crs-setup.conf", crs_dir.display())))?;
    texts.push((setup.display().to_string(), read(&setup)?));
    texts.extend(opts.before_rules.iter().cloned());
    for f in rule_files(crs_dir)? {
        texts.push((f.display().to_string(), read(&f)?));
    }
    texts.extend(opts.after_rules.iter().cloned());
    // the mode is the caller's (the gateway's per-route `crs` setting): a
    // rule file that set it would change it for every route, and
    // `DetectionOnly` or `Off` there would let a route configured to block
    // pass attacks
    for (name, text) in texts.iter().skip(2) {
        let file: std::sync::Arc<str> = std::sync::Arc::from(name.as_str());
        for d in crate::lexer::directives(text, &file)? {
            if d.name.eq_ignore_ascii_case("SecRuleEngine") {
                return Err(LoadError::at(
                    &file,
                    d.line,
                    "SecRuleEngine: the engine's mode is the route's setting (crs = \"detect\" or \"block\"), not a rule file's",
                ));
            }
        }
    }
    let refs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    RuleSet::from_texts(&refs, &crs_dir.join("rules"))
}
