//! Transformations (`t:...`), byte for byte as ModSecurity defines them
//! (its reference manual and libmodsecurity's implementations): each takes
//! the value as bytes and gives the transformed bytes. Invalid encodings are
//! left as written, never an error.

/// The transformations the engine implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transform {
    Base64Decode,
    CmdLine,
    CompressWhitespace,
    CssDecode,
    EscapeSeqDecode,
    HexEncode,
    HtmlEntityDecode,
    JsDecode,
    Length,
    Lowercase,
    NormalizePath,
    NormalizePathWin,
    RemoveCommentsChar,
    RemoveNulls,
    RemoveWhitespace,
    ReplaceComments,
    Sha1,
    Trim,
    UrlDecode,
    UrlDecodeUni,
    Utf8ToUnicode,
}

use Transform::*;

const NAMES: &[(&str, Transform)] = &[
    ("base64Decode", Base64Decode),
    ("cmdLine", CmdLine),
    ("compressWhitespace", CompressWhitespace),
    ("cssDecode", CssDecode),
    ("escapeSeqDecode", EscapeSeqDecode),
    ("hexEncode", HexEncode),
    ("htmlEntityDecode", HtmlEntityDecode),
    ("jsDecode", JsDecode),
    ("length", Length),
    ("lowercase", Lowercase),
    ("normalizePath", NormalizePath),
    ("normalisePath", NormalizePath),
    ("normalizePathWin", NormalizePathWin),
    ("normalisePathWin", NormalizePathWin),
    ("removeCommentsChar", RemoveCommentsChar),
    ("removeNulls", RemoveNulls),
    ("removeWhitespace", RemoveWhitespace),
    ("replaceComments", ReplaceComments),
    ("sha1", Sha1),
    ("trim", Trim),
    ("urlDecode", UrlDecode),
    ("urlDecodeUni", UrlDecodeUni),
    ("utf8toUnicode", Utf8ToUnicode),
];

fn memchr(b: u8, v: &[u8]) -> bool {
    v.contains(&b)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_hex(c: Option<&u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_hexdigit())
}

/// Two hex digits (checked by the caller) as a byte.
fn x2c(a: u8, b: u8) -> u8 {
    (hex_val(a).unwrap_or(0) << 4) | hex_val(b).unwrap_or(0)
}

fn is_octal(c: Option<&u8>) -> bool {
    c.is_some_and(|c| (b'0'..=b'7').contains(c))
}

/// C's `isspace` in the C locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_ff(c: u8) -> bool {
    c == b'f' || c == b'F'
}

impl Transform {
    /// The transformation named `name` (as written in `t:name`).
    pub fn parse(name: &str) -> Option<Transform> {
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| *t)
    }

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// The transformed value, or None when it would equal `v`: the cheap
    /// checks first (a value with no `%` or `+` is its own URL decoding),
    /// so most values are never copied.
    pub fn apply_if_changes(self, v: &[u8]) -> Option<Vec<u8>> {
        let has = |b: u8| memchr(b, v);
        let skip = match self {
            UrlDecode | UrlDecodeUni => !has(b'%') && !has(b'+'),
            HtmlEntityDecode => !has(b'&'),
            JsDecode | CssDecode | EscapeSeqDecode => !has(b'\\'),
            RemoveNulls => !has(0),
            Lowercase => !v.iter().any(u8::is_ascii_uppercase),
            Utf8ToUnicode => v.is_ascii(),
            ReplaceComments => !v.windows(2).any(|w| w == b"/*"),
            RemoveWhitespace => !v.iter().any(|&b| is_space(b) || b == 0xa0),
            // single spaces are kept as they are
            CompressWhitespace => {
                !v.iter().any(|&b| b != b' ' && (is_space(b) || b == 0xa0))
                    && !v.windows(2).any(|w| w == b"  ")
            }
            RemoveCommentsChar => {
                !has(b'#') && !v.windows(2).any(|w| w == b"/*" || w == b"*/" || w == b"--")
            }
            // one segment that is not a dot segment is its own normal form
            NormalizePath => !has(b'/') && v != b"." && v != b"..",
            NormalizePathWin => !has(b'/') && !has(b'\\') && v != b"." && v != b"..",
            Trim => {
                v.first().is_none_or(|b| !b.is_ascii_whitespace())
                    && v.last().is_none_or(|b| !b.is_ascii_whitespace())
            }
            _ => false,
        };
        if skip {
            return None;
        }
        let out = self.apply(v);
        if out == v { None } else { Some(out) }
    }

    /// Apply to `v`.
    pub fn apply(self, v: &[u8]) -> Vec<u8> {
        match self {
            Base64Decode => base64_decode(v),
            CmdLine => cmd_line(v),
            CompressWhitespace => compress_whitespace(v),
            CssDecode => css_decode(v),
            EscapeSeqDecode => escape_seq_decode(v),
            HexEncode => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                v.iter()
                    .flat_map(|b| [HEX[(b >> 4) as usize], HEX[(b & 15) as usize]])
                    .collect()
            }
            HtmlEntityDecode => html_entity_decode(v),
            JsDecode => js_decode(v),
            Length => v.len().to_string().into_bytes(),
            Lowercase => v.to_ascii_lowercase(),
            NormalizePath => normalize_path(v, false),
            NormalizePathWin => normalize_path(v, true),
            RemoveCommentsChar => remove_comments_char(v),
            RemoveNulls => v.iter().copied().filter(|&b| b != 0).collect(),
            RemoveWhitespace => v
                .iter()
                .copied()
                .filter(|&b| !is_space(b) && b != 0xa0)
                .collect(),
            ReplaceComments => replace_comments(v),
            Sha1 => palisade_crypto::mac::sha1_legacy(v).to_vec(),
            Trim => v.trim_ascii().to_vec(),
            UrlDecode => url_decode(v, false),
            UrlDecodeUni => url_decode(v, true),
            Utf8ToUnicode => utf8_to_unicode(v),
        }
    }
}

/// `urlDecode` / `urlDecodeUni` (the latter also IIS's `%uHHHH`: the low
/// byte, plus 0x20 for full-width ASCII `%uff01`–`%uff5e`); `+` is a space.
fn url_decode(v: &[u8], uni: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        if c == b'%' {
            if uni && matches!(v.get(i + 1), Some(b'u' | b'U')) {
                if i + 5 < v.len() && v[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit) {
                    let mut d = x2c(v[i + 4], v[i + 5]);
                    if d > 0 && d < 0x5f && is_ff(v[i + 2]) && is_ff(v[i + 3]) {
                        d += 0x20;
                    }
                    out.push(d);
                    i += 6;
                } else {
                    out.extend_from_slice(&v[i..i + 2]);
                    i += 2;
                }
            } else if i + 2 < v.len() && is_hex(v.get(i + 1)) && is_hex(v.get(i + 2)) {
                out.push(x2c(v[i + 1], v[i + 2]));
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(if c == b'+' { b' ' } else { c });
            i += 1;
        }
    }
    out
}

/// Up to three octal digits after `v[i]` (a backslash); returns the value
/// (as a byte) and how many digits were used.
fn octal(v: &[u8], i: usize, js: bool) -> Option<(u8, usize)> {
    let mut j = 0;
    while i + 1 + j < v.len() && j < 3 {
        j += 1;
        if !is_octal(v.get(i + 1 + j)) {
            break;
        }
    }
    if j == 0 || !is_octal(v.get(i + 1)) {
        return None;
    }
    // jsDecode does not take three digits that would exceed one byte
    if js && j == 3 && v[i + 1] > b'3' {
        j = 2;
    }
    let n = v[i + 1..i + 1 + j]
        .iter()
        .fold(0u32, |a, &d| a * 8 + u32::from(d - b'0'));
    Some(((n & 0xff) as u8, j))
}

fn js_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' {
            out.push(v[i]);
            i += 1;
            continue;
        }
        if i + 5 < v.len() && v[i + 1] == b'u' && v[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit)
        {
            let mut d = x2c(v[i + 4], v[i + 5]);
            if d > 0 && d < 0x5f && is_ff(v[i + 2]) && is_ff(v[i + 3]) {
                d += 0x20;
            }
            out.push(d);
            i += 6;
        } else if i + 3 < v.len()
            && v[i + 1] == b'x'
            && is_hex(v.get(i + 2))
            && is_hex(v.get(i + 3))
        {
            out.push(x2c(v[i + 2], v[i + 3]));
            i += 4;
        } else if let Some((d, j)) = octal(v, i, true) {
            out.push(d);
            i += 1 + j;
        } else if i + 1 < v.len() {
            out.push(match v[i + 1] {
                b'a' => 7,
                b'b' => 8,
                b'f' => 12,
                b'n' => 10,
                b'r' => 13,
                b't' => 9,
                b'v' => 11,
                c => c,
            });
            i += 2;
        } else {
            out.push(b'\\');
            i += 1;
        }
    }
    out
}

fn escape_seq_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' || i + 1 >= v.len() {
            out.push(v[i]);
            i += 1;
            continue;
        }
        let simple = match v[i + 1] {
            b'a' => Some(7),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(10),
            b'r' => Some(13),
            b't' => Some(9),
            b'v' => Some(11),
            b'\\' => Some(b'\\'),
            b'?' => Some(b'?'),
            b'\'' => Some(b'\''),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
        } else if matches!(v[i + 1], b'x' | b'X')
            && i + 3 < v.len()
            && is_hex(v.get(i + 2))
            && is_hex(v.get(i + 3))
        {
            out.push(x2c(v[i + 2], v[i + 3]));
            i += 4;
        } else if let Some((d, j)) = octal(v, i, false) {
            out.push(d);
            i += 1 + j;
        } else {
            // not an escape it knows: the character after the backslash
            out.push(v[i + 1]);
            i += 2;
        }
    }
    out
}

fn html_entity_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'&' && i + 1 < v.len() {
            let mut j = i + 1;
            let decoded: Option<u8> = if v[j] == b'#' {
                j += 1;
                let hex = matches!(v.get(j), Some(b'x' | b'X'));
                if hex {
                    j += 1;
                }
                let k = j;
                while j < v.len()
                    && (if hex {
                        v[j].is_ascii_hexdigit()
                    } else {
                        v[j].is_ascii_digit()
                    })
                {
                    j += 1;
                }
                if j > k {
                    let radix = if hex { 16 } else { 10 };
                    // C's strtol then a cast to unsigned char: the low byte
                    let n = v[k..j].iter().fold(0u64, |a, &d| {
                        a.wrapping_mul(radix)
                            .wrapping_add(u64::from(hex_val(d).unwrap_or(0)))
                    });
                    Some((n & 0xff) as u8)
                } else {
                    None
                }
            } else {
                let k = j;
                while j < v.len() && v[j].is_ascii_alphanumeric() {
                    j += 1;
                }
                match v[k..j].to_ascii_lowercase().as_slice() {
                    b"quot" => Some(b'"'),
                    b"amp" => Some(b'&'),
                    b"lt" => Some(b'<'),
                    b"gt" => Some(b'>'),
                    b"nbsp" => Some(0xa0),
                    _ => None,
                }
            };
            if let Some(d) = decoded {
                out.push(d);
                i = if v.get(j) == Some(&b';') { j + 1 } else { j };
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn css_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' {
            out.push(v[i]);
            i += 1;
            continue;
        }
        if i + 1 >= v.len() {
            // a lone backslash at the end is dropped
            i += 1;
            continue;
        }
        i += 1;
        let mut j = 0;
        while j < 6 && i + j < v.len() && v[i + j].is_ascii_hexdigit() {
            j += 1;
        }
        if j > 0 {
            let h = &v[i..i + j];
            let (mut d, full) = match j {
                1 => (hex_val(h[0]).unwrap_or(0), false),
                2 | 3 => (x2c(h[j - 2], h[j - 1]), false),
                4 => (x2c(h[2], h[3]), true),
                5 => (x2c(h[3], h[4]), h[0] == b'0'),
                _ => (x2c(h[4], h[5]), h[0] == b'0' && h[1] == b'0'),
            };
            if full && d > 0 && d < 0x5f && is_ff(h[j - 3]) && is_ff(h[j - 4]) {
                d += 0x20;
            }
            out.push(d);
            if i + j < v.len() && is_space(v[i + j]) {
                j += 1;
            }
            i += j;
        } else if v[i] == b'\n' {
            i += 1;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

fn cmd_line(v: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(v.len());
    let mut space = false;
    for &c in v {
        match c {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                space = false;
                out.push(c);
            }
            _ => {
                out.push(c.to_ascii_lowercase());
                space = false;
            }
        }
    }
    out
}

fn compress_whitespace(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut in_ws = false;
    for &c in v {
        if is_space(c) || c == 0xa0 {
            if !in_ws {
                out.push(b' ');
                in_ws = true;
            }
        } else {
            out.push(c);
            in_ws = false;
        }
    }
    out
}

fn replace_comments(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    let mut in_comment = false;
    while i < v.len() {
        if !in_comment {
            if v[i] == b'/' && v.get(i + 1) == Some(&b'*') {
                in_comment = true;
                i += 2;
            } else {
                out.push(v[i]);
                i += 1;
            }
        } else if v[i] == b'*' && v.get(i + 1) == Some(&b'/') {
            in_comment = false;
            out.push(b' ');
            i += 2;
        } else {
            i += 1;
        }
    }
    if in_comment {
        out.push(b' ');
    }
    out
}

fn remove_comments_char(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let rest = &v[i..];
        let skip = if rest.starts_with(b"/*") || rest.starts_with(b"*/") {
            2
        } else if rest.starts_with(b"<!--") {
            4
        } else if rest.starts_with(b"-->") {
            3
        } else if rest.starts_with(b"--") {
            2
        } else if rest[0] == b'#' {
            1
        } else {
            0
        };
        if skip == 0 {
            out.push(v[i]);
            i += 1;
        } else {
            i += skip;
        }
    }
    out
}

/// Remove `.` segments, resolve `..` against the segment before (never
/// above the root of an absolute path), merge repeated `/`; a trailing `/`
/// (or a trailing `.`/`..` segment) leaves the result ending in `/`.
fn normalize_path(v: &[u8], win: bool) -> Vec<u8> {
    if v.is_empty() {
        return Vec::new();
    }
    let v: Vec<u8> = if win {
        v.iter()
            .map(|&b| if b == b'\\' { b'/' } else { b })
            .collect()
    } else {
        v.to_vec()
    };
    let absolute = v[0] == b'/';
    let mut segs: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = v.split(|&b| b == b'/').collect();
    let last = parts.len() - 1;
    let mut trailing = false;
    for (n, p) in parts.iter().enumerate() {
        match *p {
            b"" => {
                if n == last && n > 0 {
                    trailing = true;
                }
            }
            b"." => {
                if n == last {
                    trailing = true;
                }
            }
            b".." => {
                match segs.last() {
                    Some(s) if *s != b".." => {
                        segs.pop();
                    }
                    _ if absolute => {}
                    _ => segs.push(b".."),
                }
                if n == last {
                    trailing = true;
                }
            }
            s => segs.push(s),
        }
    }
    let mut out = Vec::with_capacity(v.len());
    if absolute {
        out.push(b'/');
    }
    out.extend_from_slice(&segs.join(&b'/'));
    if trailing && !segs.is_empty() {
        out.push(b'/');
    }
    out
}

fn utf8_to_unicode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        let (len, init) = match c {
            0x00..=0x7f => {
                out.push(c);
                i += 1;
                continue;
            }
            0xc2..=0xdf => (2, u32::from(c & 0x1f)),
            0xe0..=0xef => (3, u32::from(c & 0x0f)),
            0xf0..=0xf4 => (4, u32::from(c & 0x07)),
            _ => (0, 0),
        };
        let cont = |k: usize| v.get(i + k).is_some_and(|b| b & 0xc0 == 0x80);
        if len == 0 || !(1..len).all(cont) {
            // not valid UTF-8 here: the byte as it is
            out.push(c);
            i += 1;
            continue;
        }
        let code = (1..len).fold(init, |a, k| (a << 6) | u32::from(v[i + k] & 0x3f));
        out.extend_from_slice(format!("%u{code:04x}").as_bytes());
        i += len;
    }
    out
}

/// Base64 (standard alphabet, also `-` and `_`), decoded up to the first
/// byte that is not part of it; padding optional.
fn base64_decode(v: &[u8]) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(v.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in v {
        let Some(d) = val(c) else { break };
        acc = (acc << 6) | d;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apply_if_changes` skips a transformation only where it would not
    /// change the value: compared with `apply` on every string of up to
    /// three bytes over an alphabet of the bytes the skips look at, and on
    /// longer pseudo-random strings over it.
    #[test]
    fn apply_if_changes_agrees_with_apply() {
        const ALPHABET: &[u8] = b" \t\n\x0b\x0c\r\0/\\.%+&#*-<>!a=Z9'\"^,;(\xa0\xc3\xa9";
        let check = |v: &[u8]| {
            for &(_, tf) in NAMES {
                let full = tf.apply(v);
                let expected = (full != v).then_some(full);
                assert_eq!(tf.apply_if_changes(v), expected, "{tf:?} on {v:?}");
            }
        };
        check(b"");
        for &a in ALPHABET {
            check(&[a]);
            for &b in ALPHABET {
                check(&[a, b]);
                for &c in ALPHABET {
                    check(&[a, b, c]);
                }
            }
        }
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 4 + (x % 12) as usize;
            let v: Vec<u8> = (0..len)
                .map(|i| ALPHABET[(x.rotate_right(i as u32 * 5) % ALPHABET.len() as u64) as usize])
                .collect();
            check(&v);
        }
        for v in [
            &b"."[..],
            b"..",
            b"a b",
            b"a  b",
            b"a\tb",
            b"x--y",
            b"C:\\x",
            b"/a/../b",
        ] {
            check(v);
        }
    }

    fn t(tf: Transform, input: &str) -> String {
        String::from_utf8_lossy(&tf.apply(input.as_bytes())).into_owned()
    }

    #[test]
    fn url_decoding() {
        assert_eq!(t(UrlDecodeUni, "a%20b+c%2"), "a b c%2");
        assert_eq!(t(UrlDecodeUni, "%u0041%uff01%u00zz%u12"), "A!%u00zz%u12");
        assert_eq!(t(UrlDecodeUni, "%zz%41"), "%zzA");
        assert_eq!(t(UrlDecode, "%u0041"), "%u0041");
        assert_eq!(UrlDecodeUni.apply(b"%c3%a9"), "é".as_bytes());
    }

    #[test]
    fn js_and_escape_sequences() {
        assert_eq!(t(JsDecode, r"\u0061\x62\143\n\'\q"), "abc\n'q");
        assert_eq!(t(JsDecode, r"\777"), "?7"); // \77 then 7
        assert_eq!(t(JsDecode, "\\"), "\\");
        assert_eq!(t(EscapeSeqDecode, r"\x41\101\t\z\\"), "AA\tz\\");
    }

    #[test]
    fn html_and_css() {
        assert_eq!(
            t(HtmlEntityDecode, "&lt;a&#x41;&#66&QUOT;&amp;&foo;&#;"),
            "<aAB\"&&foo;&#;"
        );
        assert_eq!(HtmlEntityDecode.apply(b"&nbsp;"), vec![0xa0]);
        assert_eq!(t(CssDecode, r"\3c script\3e\x\"), "<script>x");
        assert_eq!(t(CssDecode, r"\00ff01"), "!");
        assert_eq!(CssDecode.apply(br"\0000ff01"), vec![0xff, b'0', b'1']);
        assert_eq!(t(CssDecode, r"\ff01"), "!");
    }

    #[test]
    fn whitespace_comments_and_command_lines() {
        assert_eq!(t(CmdLine, "C:\\WIN\"DOWS ;, /c  (ls)"), "c:windows/c(ls)");
        assert_eq!(t(CompressWhitespace, "a \t\n b"), "a b");
        assert_eq!(t(RemoveWhitespace, " a b\tc "), "abc");
        assert_eq!(t(ReplaceComments, "a/*x*/b/*open"), "a b ");
        assert_eq!(t(RemoveCommentsChar, "a/*b*/c--d#e<!--f-->"), "abcdef");
        assert_eq!(t(RemoveNulls, "a\0b"), "ab");
        assert_eq!(t(Lowercase, "AbÉ"), "abÉ");
        assert_eq!(t(Trim, "  x  "), "x");
    }

    #[test]
    fn paths() {
        assert_eq!(t(NormalizePath, "/a/b/../c//./d/"), "/a/c/d/");
        assert_eq!(t(NormalizePath, "/../../etc/passwd"), "/etc/passwd");
        assert_eq!(t(NormalizePath, "../x/../../y"), "../../y");
        assert_eq!(t(NormalizePath, "/a/b/.."), "/a/");
        assert_eq!(t(NormalizePathWin, "c:\\a\\..\\b"), "c:/b");
    }

    #[test]
    fn encodings() {
        assert_eq!(t(Utf8ToUnicode, "aé€😀"), "a%u00e9%u20ac%u1f600");
        assert_eq!(Utf8ToUnicode.apply(&[0xff, b'a']), vec![0xff, b'a']);
        assert_eq!(t(Base64Decode, "aGVsbG8=x"), "hello");
        assert_eq!(t(Base64Decode, "aGVsbG8"), "hello");
        assert_eq!(t(HexEncode, "AZ"), "415a");
        assert_eq!(t(Length, "abcd"), "4");
        assert_eq!(
            Sha1.apply(b"abc"),
            hex_bytes("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
    }

    fn hex_bytes(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }
}
