//! Variables (ModSecurity's "targets"): the names a rule may inspect, and
//! the target list syntax `!&NAME:selector|...`.

/// A variable: a collection (with keys) or a single value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variable {
    Args,
    ArgsGet,
    ArgsPost,
    ArgsNames,
    ArgsGetNames,
    ArgsPostNames,
    ArgsCombinedSize,
    Files,
    FilesNames,
    FilesCombinedSize,
    MatchedVar,
    MatchedVarName,
    MatchedVars,
    MatchedVarsNames,
    MultipartPartHeaders,
    MultipartStrictError,
    MultipartUnmatchedBoundary,
    QueryString,
    RemoteAddr,
    ReqbodyError,
    ReqbodyErrorMsg,
    ReqbodyProcessor,
    RequestBasename,
    RequestBody,
    RequestBodyLength,
    RequestCookies,
    RequestCookiesNames,
    RequestFilename,
    RequestHeaders,
    RequestHeadersNames,
    RequestLine,
    RequestMethod,
    RequestProtocol,
    RequestUri,
    RequestUriRaw,
    ResponseBody,
    ResponseHeaders,
    ResponseHeadersNames,
    ResponseStatus,
    Tx,
    UniqueId,
    Xml,
    /// `IP` and `GLOBAL` (persistent in ModSecurity; see `ruleset.rs`).
    Ip,
    Global,
}

use Variable::*;

/// Every name the engine knows, as SecLang spells it (case-insensitive).
const NAMES: &[(&str, Variable)] = &[
    ("ARGS", Args),
    ("ARGS_GET", ArgsGet),
    ("ARGS_POST", ArgsPost),
    ("ARGS_NAMES", ArgsNames),
    ("ARGS_GET_NAMES", ArgsGetNames),
    ("ARGS_POST_NAMES", ArgsPostNames),
    ("ARGS_COMBINED_SIZE", ArgsCombinedSize),
    ("FILES", Files),
    ("FILES_NAMES", FilesNames),
    ("FILES_COMBINED_SIZE", FilesCombinedSize),
    ("MATCHED_VAR", MatchedVar),
    ("MATCHED_VAR_NAME", MatchedVarName),
    ("MATCHED_VARS", MatchedVars),
    ("MATCHED_VARS_NAMES", MatchedVarsNames),
    ("MULTIPART_PART_HEADERS", MultipartPartHeaders),
    ("MULTIPART_STRICT_ERROR", MultipartStrictError),
    ("MULTIPART_UNMATCHED_BOUNDARY", MultipartUnmatchedBoundary),
    ("QUERY_STRING", QueryString),
    ("REMOTE_ADDR", RemoteAddr),
    ("REQBODY_ERROR", ReqbodyError),
    ("REQBODY_ERROR_MSG", ReqbodyErrorMsg),
    ("REQBODY_PROCESSOR", ReqbodyProcessor),
    ("REQUEST_BASENAME", RequestBasename),
    ("REQUEST_BODY", RequestBody),
    ("REQUEST_BODY_LENGTH", RequestBodyLength),
    ("REQUEST_COOKIES", RequestCookies),
    ("REQUEST_COOKIES_NAMES", RequestCookiesNames),
    ("REQUEST_FILENAME", RequestFilename),
    ("REQUEST_HEADERS", RequestHeaders),
    ("REQUEST_HEADERS_NAMES", RequestHeadersNames),
    ("REQUEST_LINE", RequestLine),
    ("REQUEST_METHOD", RequestMethod),
    ("REQUEST_PROTOCOL", RequestProtocol),
    ("REQUEST_URI", RequestUri),
    ("REQUEST_URI_RAW", RequestUriRaw),
    ("RESPONSE_BODY", ResponseBody),
    ("RESPONSE_HEADERS", ResponseHeaders),
    ("RESPONSE_HEADERS_NAMES", ResponseHeadersNames),
    ("RESPONSE_STATUS", ResponseStatus),
    ("TX", Tx),
    ("UNIQUE_ID", UniqueId),
    ("XML", Xml),
    ("IP", Ip),
    ("GLOBAL", Global),
];

impl Variable {
    /// Values clients send unchanged request after request: the ones
    /// [`crate::memo`] keeps negative answers for. Headers, cookies, their
    /// names, the method and protocol, and the names of arguments (an API's
    /// fields, the same in every request of one kind). Argument values,
    /// paths and bodies are not among them: they differ per request, and
    /// keeping them would flatter a benchmark that replays a fixed set of
    /// requests.
    pub fn repeated_by_clients(self) -> bool {
        use Variable::*;
        matches!(
            self,
            RequestHeaders
                | RequestHeadersNames
                | RequestCookies
                | RequestCookiesNames
                | RequestMethod
                | RequestProtocol
                | ArgsNames
                | ArgsGetNames
                | ArgsPostNames
        )
    }

    /// The variable named `name` (any case).
    pub fn parse(name: &str) -> Option<Variable> {
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Its SecLang name.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Whether it holds keyed values (a selector may pick some).
    pub fn is_collection(self) -> bool {
        matches!(
            self,
            Args | ArgsGet
                | ArgsPost
                | ArgsNames
                | ArgsGetNames
                | ArgsPostNames
                | Files
                | FilesNames
                | MatchedVars
                | MatchedVarsNames
                | MultipartPartHeaders
                | RequestCookies
                | RequestCookiesNames
                | RequestHeaders
                | RequestHeadersNames
                | ResponseHeaders
                | ResponseHeadersNames
                | Tx
                | Xml
                | Ip
                | Global
        )
    }
}

/// Which keys of a collection a target names.
#[derive(Clone, Debug)]
pub enum Selector {
    /// One key, compared without regard to case (ModSecurity's collections).
    Key(String),
    /// Keys matching a regex (`ARGS:/^id_/`), case-insensitive as ModSecurity's.
    Regex(regex::Regex),
    /// An XPath expression on `XML` (`XML:/*`, `XML://@*`).
    XPath(String),
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Selector::Key(a), Selector::Key(b)) => a.eq_ignore_ascii_case(b),
            (Selector::Regex(a), Selector::Regex(b)) => a.as_str() == b.as_str(),
            (Selector::XPath(a), Selector::XPath(b)) => a == b,
            _ => false,
        }
    }
}

/// One entry of a rule's target list.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub variable: Variable,
    pub selector: Option<Selector>,
    /// `&VAR`: the number of values, not the values.
    pub count: bool,
    /// `!VAR:key`: removes these from the rule's other targets.
    pub exclude: bool,
}

/// Parse a target list (`ARGS|!ARGS:foo|&TX:x|REQUEST_COOKIES:/^a|b$/`).
pub fn parse_targets(text: &str) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i <= b.len() {
        // one target: up to the next `|` outside a /regex/ or 'quoted' selector
        let start = i;
        let mut in_sel = None::<u8>;
        let mut after_colon = false;
        while i < b.len() {
            let c = b[i];
            match in_sel {
                Some(q) => {
                    if c == b'\\' {
                        i += 2;
                        continue;
                    }
                    if c == q {
                        in_sel = None;
                    }
                }
                None => {
                    if c == b'|' {
                        break;
                    }
                    if c == b':' && !after_colon {
                        after_colon = true;
                        // XML's XPath selectors start with `/` too but are no regex
                        let name = text[start..i].trim().trim_start_matches(['!', '&']);
                        if let Some(&n) = b.get(i + 1)
                            && (n == b'/' || n == b'\'')
                            && !name.eq_ignore_ascii_case("XML")
                        {
                            in_sel = Some(n);
                            i += 2;
                            continue;
                        }
                    }
                }
            }
            i += 1;
        }
        if in_sel.is_some() {
            return Err(format!(
                "unterminated selector in target {:?}",
                &text[start..]
            ));
        }
        let end = i.min(b.len());
        out.push(parse_target(&text[start..end])?);
        i = end + 1;
    }
    Ok(out)
}

fn parse_target(t: &str) -> Result<Target, String> {
    let t = t.trim();
    let (exclude, t) = match t.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let (count, t) = match t.strip_prefix('&') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let (name, sel) = match t.split_once(':') {
        Some((n, s)) => (n, Some(s)),
        None => (t, None),
    };
    let variable = Variable::parse(name).ok_or_else(|| format!("unknown variable {name:?}"))?;
    let selector = match sel {
        None => None,
        Some("") => return Err(format!("empty selector on {name}")),
        Some(s) => {
            if !variable.is_collection() {
                return Err(format!("{name} is not a collection: it takes no selector"));
            }
            Some(if variable == Variable::Xml {
                // the two XPath expressions CRS uses: the root element's text
                // and every attribute value
                if s != "/*" && s != "//@*" {
                    return Err(format!(
                        "unsupported XPath {s:?} on XML (only /* and //@* are implemented)"
                    ));
                }
                Selector::XPath(s.to_string())
            } else if let Some(re) = s.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
                Selector::Regex(
                    regex::RegexBuilder::new(re)
                        .case_insensitive(true)
                        .build()
                        .map_err(|e| format!("bad selector regex on {name}: {e}"))?,
                )
            } else if let Some(q) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
                match q.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
                    Some(re) => Selector::Regex(
                        regex::RegexBuilder::new(re)
                            .case_insensitive(true)
                            .build()
                            .map_err(|e| format!("bad selector regex on {name}: {e}"))?,
                    ),
                    None => Selector::Key(q.to_string()),
                }
            } else if matches!(variable, Variable::Tx | Variable::Ip | Variable::Global) {
                // the engine keeps these keys in lowercase: looked up as such
                Selector::Key(s.to_ascii_lowercase())
            } else {
                Selector::Key(s.to_string())
            })
        }
    };
    if exclude && selector.is_none() {
        return Err(format!("!{name} needs a selector (what to exclude)"));
    }
    Ok(Target {
        variable,
        selector,
        count,
        exclude,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_lists() {
        let t = parse_targets(
            "REQUEST_COOKIES|!REQUEST_COOKIES:/__utm|_pk/|&TX:x|ARGS:'/^id$/'|XML:/*|REQUEST_HEADERS:User-Agent",
        )
        .unwrap();
        assert_eq!(t.len(), 6);
        assert_eq!(t[0].variable, Variable::RequestCookies);
        assert!(t[1].exclude);
        assert!(matches!(&t[1].selector, Some(Selector::Regex(r)) if r.as_str() == "__utm|_pk"));
        assert!(t[2].count && t[2].variable == Variable::Tx);
        assert!(matches!(&t[3].selector, Some(Selector::Regex(r)) if r.as_str() == "^id$"));
        assert!(matches!(&t[4].selector, Some(Selector::XPath(p)) if p == "/*"));
        assert!(matches!(&t[5].selector, Some(Selector::Key(k)) if k == "User-Agent"));
    }

    #[test]
    fn bad_targets_are_refused() {
        for (t, msg) in [
            ("ARGZ", "unknown variable \"ARGZ\""),
            (
                "REQUEST_METHOD:x",
                "REQUEST_METHOD is not a collection: it takes no selector",
            ),
            ("!ARGS", "!ARGS needs a selector (what to exclude)"),
            ("ARGS:", "empty selector on ARGS"),
            ("ARGS:/(/", "bad selector regex on ARGS"),
            ("ARGS:/abc", "unterminated selector in target \"ARGS:/abc\""),
        ] {
            let e = parse_targets(t).unwrap_err();
            assert!(e.starts_with(msg), "{t}: {e}");
        }
    }
}
