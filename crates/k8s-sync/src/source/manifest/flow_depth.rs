//! A cheap pre-scan that bounds how deeply flow collections (`[ ]`, `{ }`) nest before a
//! manifest is handed to the YAML parser.
//!
//! Why: the YAML scanner (libyaml, under `serde_yaml_ng`) keeps one "simple key" slot per open
//! flow collection and walks all of them for every token, so a file of N nested brackets takes
//! time quadratic in N (25,000 levels: seconds) before the deserializer's own recursion limit is
//! ever consulted. Block nesting (`- - - x`, indentation) does not have that cost.
//!
//! It also counts tokens: the parser keeps every event of a document in memory (about 100
//! bytes each), so a file dense in tokens (`[[]],[[]],...`) costs far more than its size.
//!
//! How: this walks the text token by token with the scanner's own rules (the dispatch of
//! `yaml_parser_fetch_next_token`, the extents of quoted, plain and block scalars, comments, tags,
//! anchors, directives, and the block indentation stack that decides where a plain or block
//! scalar ends), but builds no tokens. It is linear in the input and stops at the first level
//! past the limit. Where the text is not valid YAML the real scanner stops with an error, so
//! what this does afterwards does not matter; before that point it follows the scanner exactly,
//! so the depth it reports is the depth the parser would reach.

/// The scanner state that decides how the next characters are read.
struct Scan<'a> {
    b: &'a [u8],
    /// Byte offset (the scanner's `mark.index` counts bytes too).
    i: usize,
    line: usize,
    /// In characters, like the scanner's `mark.column`.
    col: usize,
    flow: usize,
    max_flow: usize,
    /// Block indentation column, -1 at top level, and the enclosing ones.
    indent: isize,
    indents: Vec<isize>,
    simple_key_allowed: bool,
    /// The possible simple key of the block level (flow level 0): line, byte offset, column.
    /// Only this one moves the indentation (`roll_indent` does nothing inside flow).
    key0: Option<(usize, usize, usize)>,
}

/// What a pre-scan found over its limits.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Depth,
    Tokens,
}

/// Returns as soon as flow collections nest deeper than `max_depth` or the text holds more than
/// `max_tokens` tokens; else the deepest flow nesting found.
pub(crate) fn prescan(text: &str, max_depth: usize, max_tokens: usize) -> Result<usize, Exceeded> {
    // The reader drops a byte order mark at the start before the scanner sees the text.
    let start = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let mut s = Scan {
        b: text.as_bytes(),
        i: start,
        line: 0,
        col: 0,
        flow: 0,
        max_flow: 0,
        indent: -1,
        indents: Vec::new(),
        simple_key_allowed: true,
        key0: None,
    };
    let mut tokens = 0usize;
    while s.next_token() {
        if s.max_flow > max_depth {
            return Err(Exceeded::Depth);
        }
        tokens += 1;
        if tokens > max_tokens {
            return Err(Exceeded::Tokens);
        }
    }
    Ok(s.max_flow)
}

impl Scan<'_> {
    fn at(&self, k: usize) -> u8 {
        self.b.get(self.i + k).copied().unwrap_or(0)
    }

    /// Length in bytes of the line break at offset `k` from here, 0 if none (`\r\n`, `\r`,
    /// `\n`, NEL, LS, PS: the scanner's `IS_BREAK`).
    fn break_len(&self, k: usize) -> usize {
        match (self.at(k), self.at(k + 1), self.at(k + 2)) {
            (b'\r', b'\n', _) => 2,
            (b'\r' | b'\n', _, _) => 1,
            (0xC2, 0x85, _) => 2,
            (0xE2, 0x80, 0xA8 | 0xA9) => 3,
            _ => 0,
        }
    }

    fn is_break(&self, k: usize) -> bool {
        self.break_len(k) > 0
    }

    /// End of input. A NUL is refused by the reader before the scanner sees it: stop there too.
    fn is_z(&self, k: usize) -> bool {
        self.at(k) == 0
    }

    fn is_blank(&self, k: usize) -> bool {
        matches!(self.at(k), b' ' | b'\t')
    }

    fn is_blankz(&self, k: usize) -> bool {
        self.is_blank(k) || self.is_break(k) || self.is_z(k)
    }

    fn is_alpha(&self, k: usize) -> bool {
        matches!(self.at(k), b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'-')
    }

    /// Skips one character (not a line break).
    fn skip(&mut self) {
        let width = match self.at(0) {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        self.i = (self.i + width).min(self.b.len());
        self.col += 1;
    }

    /// Skips one line break.
    fn skip_line(&mut self) {
        let n = self.break_len(0);
        if n > 0 {
            self.i += n;
            self.col = 0;
            self.line += 1;
        }
    }

    fn roll_indent(&mut self, column: usize) {
        if self.flow == 0 && self.indent < column as isize {
            self.indents.push(self.indent);
            self.indent = column as isize;
        }
    }

    fn unroll_indent(&mut self, column: isize) {
        if self.flow != 0 {
            return;
        }
        while self.indent > column {
            self.indent = self.indents.pop().unwrap_or(-1);
        }
    }

    /// `save_simple_key`: only the block level's key matters here.
    fn save_key(&mut self) {
        if self.simple_key_allowed && self.flow == 0 {
            self.key0 = Some((self.line, self.i, self.col));
        }
    }

    /// `remove_simple_key` of the current level.
    fn remove_key(&mut self) {
        if self.flow == 0 {
            self.key0 = None;
        }
    }

    fn document_indicator(&self) -> bool {
        self.col == 0
            && ((self.at(0) == b'-' && self.at(1) == b'-' && self.at(2) == b'-')
                || (self.at(0) == b'.' && self.at(1) == b'.' && self.at(2) == b'.'))
            && self.is_blankz(3)
    }

    /// Reads one token; false at the end of input or where the scanner would report an error.
    fn next_token(&mut self) -> bool {
        self.scan_to_next_token();
        // Stale simple key: on an earlier line or more than 1024 bytes back.
        if let Some((line, index, _)) = self.key0
            && (line < self.line || index + 1024 < self.i)
        {
            self.key0 = None;
        }
        self.unroll_indent(self.col as isize);
        if self.is_z(0) {
            return false;
        }
        let c = self.at(0);
        if self.col == 0 && c == b'%' {
            self.unroll_indent(-1);
            self.remove_key();
            self.simple_key_allowed = false;
            while !self.is_break(0) && !self.is_z(0) {
                self.skip();
            }
            self.skip_line();
            return true;
        }
        if self.col == 0 && self.document_indicator() {
            self.unroll_indent(-1);
            self.remove_key();
            self.simple_key_allowed = false;
            self.skip();
            self.skip();
            self.skip();
            return true;
        }
        match c {
            b'[' | b'{' => {
                self.save_key();
                self.flow += 1;
                self.max_flow = self.max_flow.max(self.flow);
                self.simple_key_allowed = true;
                self.skip();
            }
            b']' | b'}' => {
                self.remove_key();
                self.flow = self.flow.saturating_sub(1);
                self.simple_key_allowed = false;
                self.skip();
            }
            b',' => {
                self.remove_key();
                self.simple_key_allowed = true;
                self.skip();
            }
            b'-' if self.is_blankz(1) => {
                self.roll_indent(self.col);
                self.remove_key();
                self.simple_key_allowed = true;
                self.skip();
            }
            b'?' if self.flow != 0 || self.is_blankz(1) => {
                self.roll_indent(self.col);
                self.remove_key();
                self.simple_key_allowed = self.flow == 0;
                self.skip();
            }
            b':' if self.flow != 0 || self.is_blankz(1) => {
                if self.flow == 0 {
                    match self.key0.take() {
                        Some((_, _, column)) => {
                            self.roll_indent(column);
                            self.simple_key_allowed = false;
                        }
                        None => {
                            self.roll_indent(self.col);
                            self.simple_key_allowed = true;
                        }
                    }
                } else {
                    self.simple_key_allowed = false;
                }
                self.skip();
            }
            b'*' | b'&' => {
                self.save_key();
                self.simple_key_allowed = false;
                self.skip();
                while self.is_alpha(0) {
                    self.skip();
                }
            }
            b'!' => {
                self.save_key();
                self.simple_key_allowed = false;
                self.scan_tag();
            }
            b'|' | b'>' if self.flow == 0 => {
                self.remove_key();
                self.simple_key_allowed = true;
                return self.scan_block_scalar();
            }
            b'\'' | b'"' => {
                self.save_key();
                self.simple_key_allowed = false;
                return self.scan_quoted(c);
            }
            _ if self.starts_plain() => {
                self.save_key();
                self.simple_key_allowed = false;
                if self.scan_plain() {
                    self.simple_key_allowed = true;
                }
            }
            _ => return false, // "found character that cannot start any token"
        }
        true
    }

    fn starts_plain(&self) -> bool {
        let c = self.at(0);
        let indicator = self.is_blankz(0)
            || matches!(
                c,
                b'-' | b'?'
                    | b':'
                    | b','
                    | b'['
                    | b']'
                    | b'{'
                    | b'}'
                    | b'#'
                    | b'&'
                    | b'*'
                    | b'!'
                    | b'|'
                    | b'>'
                    | b'\''
                    | b'"'
                    | b'%'
                    | b'@'
                    | b'`'
            );
        !indicator
            || (c == b'-' && !self.is_blank(1))
            || (self.flow == 0 && matches!(c, b'?' | b':') && !self.is_blankz(1))
    }

    fn scan_to_next_token(&mut self) {
        loop {
            if self.col == 0 && self.at(0) == 0xEF && self.at(1) == 0xBB && self.at(2) == 0xBF {
                self.skip();
            }
            while self.at(0) == b' '
                || ((self.flow != 0 || !self.simple_key_allowed) && self.at(0) == b'\t')
            {
                self.skip();
            }
            if self.at(0) == b'#' {
                while !self.is_break(0) && !self.is_z(0) {
                    self.skip();
                }
            }
            if !self.is_break(0) {
                return;
            }
            self.skip_line();
            if self.flow == 0 {
                self.simple_key_allowed = true;
            }
        }
    }

    fn scan_tag(&mut self) {
        if self.at(1) == b'<' {
            // Verbatim: URI characters, which include `,[]`, up to `>`.
            self.skip();
            self.skip();
            while !self.is_blankz(0) && self.at(0) != b'>' && self.is_uri_char(true) {
                self.skip();
            }
            if self.at(0) == b'>' {
                self.skip();
            }
        } else {
            self.skip();
            while self.is_alpha(0) {
                self.skip();
            }
            if self.at(0) == b'!' {
                self.skip();
            }
            while self.is_uri_char(false) {
                self.skip();
            }
        }
        // The scanner then wants a blank (or `,` in flow): anything else is its error, and
        // reading on as a new token is as good as stopping.
    }

    fn is_uri_char(&self, verbatim: bool) -> bool {
        self.is_alpha(0)
            || matches!(
                self.at(0),
                b';' | b'/'
                    | b'?'
                    | b':'
                    | b'@'
                    | b'&'
                    | b'='
                    | b'+'
                    | b'$'
                    | b'.'
                    | b'%'
                    | b'!'
                    | b'~'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')'
            )
            || (verbatim && matches!(self.at(0), b',' | b'[' | b']'))
    }

    /// A single- or double-quoted scalar; false if the input ends inside it (an error).
    fn scan_quoted(&mut self, quote: u8) -> bool {
        self.skip();
        loop {
            if self.is_z(0) {
                return false;
            }
            if self.document_indicator() {
                return false;
            }
            let c = self.at(0);
            if quote == b'\'' && c == b'\'' && self.at(1) == b'\'' {
                self.skip();
                self.skip();
            } else if c == quote {
                self.skip();
                return true;
            } else if quote == b'"' && c == b'\\' {
                if self.is_break(1) {
                    self.skip();
                    self.skip_line();
                    continue;
                }
                let code_length = match self.at(1) {
                    b'x' => 2,
                    b'u' => 4,
                    b'U' => 8,
                    b'0' | b'a' | b'b' | b't' | b'\t' | b'n' | b'v' | b'f' | b'r' | b'e' | b' '
                    | b'"' | b'/' | b'\\' | b'N' | b'_' | b'L' | b'P' => 0,
                    _ => return false, // unknown escape: an error
                };
                self.skip();
                self.skip();
                for _ in 0..code_length {
                    if !self.at(0).is_ascii_hexdigit() {
                        return false;
                    }
                    self.skip();
                }
            } else if self.is_break(0) {
                self.skip_line();
            } else {
                self.skip();
            }
        }
    }

    /// A plain scalar, up to where the scanner ends it; returns whether a line break was
    /// consumed after it (which allows a simple key again).
    fn scan_plain(&mut self) -> bool {
        let indent = self.indent + 1;
        let mut leading_blanks = false;
        loop {
            if self.document_indicator() || self.at(0) == b'#' {
                break;
            }
            while !self.is_blankz(0) {
                let c = self.at(0);
                if (c == b':' && self.is_blankz(1))
                    || (self.flow != 0 && matches!(c, b',' | b'[' | b']' | b'{' | b'}'))
                {
                    break;
                }
                // (A `:` followed by a flow indicator inside flow is the scanner's error.)
                self.skip();
            }
            if !(self.is_blank(0) || self.is_break(0)) {
                break;
            }
            while self.is_blank(0) || self.is_break(0) {
                if self.is_blank(0) {
                    self.skip();
                } else {
                    self.skip_line();
                    leading_blanks = true;
                }
            }
            if self.flow == 0 && (self.col as isize) < indent {
                break;
            }
        }
        leading_blanks
    }

    /// A literal or folded block scalar: its header line, then every line indented at least
    /// as far as its content. False where the scanner reports an error.
    fn scan_block_scalar(&mut self) -> bool {
        self.skip();
        let mut increment = 0usize;
        let c = self.at(0);
        if c == b'+' || c == b'-' {
            self.skip();
            if self.at(0).is_ascii_digit() {
                if self.at(0) == b'0' {
                    return false;
                }
                increment = (self.at(0) - b'0') as usize;
                self.skip();
            }
        } else if c.is_ascii_digit() {
            if c == b'0' {
                return false;
            }
            increment = (c - b'0') as usize;
            self.skip();
            if matches!(self.at(0), b'+' | b'-') {
                self.skip();
            }
        }
        while self.is_blank(0) {
            self.skip();
        }
        if self.at(0) == b'#' {
            while !self.is_break(0) && !self.is_z(0) {
                self.skip();
            }
        }
        if !self.is_break(0) && !self.is_z(0) {
            return false;
        }
        self.skip_line();
        let mut indent: isize = 0;
        if increment != 0 {
            indent = if self.indent >= 0 {
                self.indent + increment as isize
            } else {
                increment as isize
            };
        }
        if !self.block_scalar_breaks(&mut indent) {
            return false;
        }
        while self.col as isize == indent && !self.is_z(0) {
            while !self.is_break(0) && !self.is_z(0) {
                self.skip();
            }
            self.skip_line();
            if !self.block_scalar_breaks(&mut indent) {
                return false;
            }
        }
        true
    }

    fn block_scalar_breaks(&mut self, indent: &mut isize) -> bool {
        let mut max_indent = 0isize;
        loop {
            while (*indent == 0 || (self.col as isize) < *indent) && self.at(0) == b' ' {
                self.skip();
            }
            max_indent = max_indent.max(self.col as isize);
            if (*indent == 0 || (self.col as isize) < *indent) && self.at(0) == b'\t' {
                return false;
            }
            if !self.is_break(0) {
                break;
            }
            self.skip_line();
        }
        if *indent == 0 {
            *indent = max_indent.max(self.indent + 1).max(1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(text: &str) -> usize {
        prescan(text, usize::MAX, usize::MAX).unwrap()
    }

    #[test]
    fn counts_flow_collections_only() {
        assert_eq!(depth("a: b\nc: [1, {d: [2]}]\n"), 3);
        assert_eq!(depth(r#"{"a": [{"b": {"c": 1}}]}"#), 4);
        assert_eq!(depth("- - - - x\n"), 0);
        assert_eq!(
            prescan(&"[".repeat(100_000), 64, usize::MAX),
            Err(Exceeded::Depth)
        );
        assert_eq!(prescan(&"[],".repeat(100), 64, 100), Err(Exceeded::Tokens));
        assert_eq!(prescan(&"a: b\n".repeat(10), 64, 100), Ok(0));
    }

    #[test]
    fn brackets_in_scalars_and_comments_do_not_count() {
        // plain scalars in block context, quoted scalars, comments, block scalars
        let text = "path: /api/{id}/[x\nq: '[[[['\nd: \"{{{\\\"[\"\n# [[[[[\nb: |\n  {{{{{\n  [[[[[\nc: ok\n";
        assert_eq!(depth(text), 0);
        // a flow collection after a block scalar ends (dedent) does count
        assert_eq!(depth("b: |\n  [[[\nc: [[1]]\n"), 2);
        // a quote inside a plain scalar is not a quoted scalar
        assert_eq!(depth("[a'b, [[c]], d'e]"), 3);
        // a continued plain scalar swallows brackets; a dedented line does not
        assert_eq!(depth("k:\n  - a\n    [b\n"), 0);
        assert_eq!(depth("k: a\n[[b]]: c\n"), 2);
    }
    /// The depth the YAML scanner itself reaches on each input (its FLOW-*-START/END tokens,
    /// read from the scanner of the `unsafe-libyaml` crate that `serde_yaml_ng` uses).
    #[test]
    fn agrees_with_the_scanner() {
        for (text, scanner_depth) in [
            ("k: a\n  [b\n", 0),
            ("- |\n  [[\n- [[x]]\n", 2),
            ("a: 'x\n  [[y'\n", 0),
            (r#"a: "x\"[[""#, 0),
            ("[a, 'b]', c]", 1),
            ("{a: [b, {c: d}]}: e\n", 3),
            ("%YAML 1.2\n--- [[a]]\n", 2),
            ("a: !<tag:[x]> [[b]]\n", 2),
            ("a: &x [b]\n", 1),
            ("? [a]\n: [[b]]\n", 2),
            ("\u{feff}[[a]]", 2),
            ("# [[[\n[x] # ]]]\n", 1),
            ("a: b # [[[\n", 0),
            ("a: b#[[[\n", 0),
            ("[a#b, [c]]", 2),
            ("- - [a]\n  - [[b]]\n", 2),
            ("a: >\n  [[[\n b: [c]\n", 1),
            ("[a'b, [[c]], d'e]", 3),
            ("k:\n  - a\n    [b\n", 0),
            ("k: a\n[[b]]: c\n", 2),
        ] {
            assert_eq!(depth(text), scanner_depth, "{text:?}");
        }
    }
}
