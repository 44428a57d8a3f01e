//! Recursive-descent parser from tokens to an [`Expr`], with pcap's precedence: `not`
//! binds tightest; `and` and `or` have equal precedence and associate left to right.

use std::net::IpAddr;

use super::{
    ast::{Dir, Expr, Pred, Proto},
    error::{FilterError, snippet},
    lexer::{Token, TokenKind, tokenize},
};

/// Deepest nesting of parentheses and `not`s accepted.
const MAX_DEPTH: usize = 64;

/// Parses a filter; `Ok(None)` for an empty (all-whitespace) filter, which matches all.
pub fn parse(text: &str) -> Result<Option<Expr>, FilterError> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        text,
        tokens,
        pos: 0,
        depth: 0,
    };
    if p.peek().kind == TokenKind::End {
        return Ok(None);
    }
    let expr = p.expr()?;
    if p.peek().kind != TokenKind::End {
        return Err(p.unexpected("`and`, `or` or the end of the filter"));
    }
    Ok(Some(expr))
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

fn word(tok: &Token) -> Option<&str> {
    match &tok.kind {
        TokenKind::Word(w) => Some(w),
        _ => None,
    }
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // tokenize always ends with End and `next` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let tok = self.peek().clone();
        if tok.kind != TokenKind::End {
            self.pos += 1;
        }
        tok
    }

    fn unexpected(&self, expected: &str) -> FilterError {
        let tok = self.peek();
        let found = match tok.kind {
            TokenKind::End => "end of filter".to_string(),
            _ => format!("`{}`", &self.text[tok.start..tok.end]),
        };
        FilterError::Syntax {
            found,
            offset: tok.start,
            expected: expected.to_string(),
            snippet: snippet(self.text, tok.start, tok.end),
        }
    }

    fn invalid(&self, tok: &Token, what: &'static str, reason: impl Into<String>) -> FilterError {
        FilterError::Invalid {
            what,
            text: self.text[tok.start..tok.end].to_string(),
            offset: tok.start,
            reason: reason.into(),
            snippet: snippet(self.text, tok.start, tok.end),
        }
    }

    fn nest(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.unexpected(&format!(
                "a primitive (nesting deeper than {MAX_DEPTH} is not supported)"
            )));
        }
        Ok(())
    }

    /// expr := unary (("and" | "&&" | "or" | "||") unary)*
    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        loop {
            let tok = self.peek();
            let is_and = match (&tok.kind, word(tok)) {
                (TokenKind::AndAnd, _) | (_, Some("and")) => true,
                (TokenKind::OrOr, _) | (_, Some("or")) => false,
                _ => return Ok(left),
            };
            self.next();
            let right = self.unary()?;
            left = if is_and {
                Expr::And(Box::new(left), Box::new(right))
            } else {
                Expr::Or(Box::new(left), Box::new(right))
            };
        }
    }

    /// unary := ("not" | "!") unary | primary
    fn unary(&mut self) -> Result<Expr, FilterError> {
        let tok = self.peek();
        if tok.kind == TokenKind::Bang || word(tok) == Some("not") {
            self.next();
            self.nest()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    /// primary := "(" expr ")" | proto [qualified] | qualified
    fn primary(&mut self) -> Result<Expr, FilterError> {
        const EXPECTED: &str = "a primitive (`host`, `net`, `port`, `portrange`, `src`, `dst`, \
                                `ip`, `ip6`, `tcp`, `udp`, `icmp`, `icmp6`, `arp`), `not` or `(`";
        let tok = self.peek().clone();
        if tok.kind == TokenKind::LParen {
            self.next();
            self.nest()?;
            let inner = self.expr()?;
            if self.peek().kind != TokenKind::RParen {
                return Err(self.unexpected("`)`, `and` or `or`"));
            }
            self.next();
            self.depth -= 1;
            return Ok(inner);
        }
        let Some(w) = word(&tok) else {
            return Err(self.unexpected(EXPECTED));
        };
        if let Some(proto) = Proto::from_keyword(w) {
            self.next();
            let next = word(self.peek());
            if matches!(
                next,
                Some("src" | "dst" | "host" | "net" | "port" | "portrange")
            ) {
                let qualified = self.qualified(Some(proto))?;
                return Ok(Expr::And(
                    Box::new(Expr::Pred(Pred::Proto(proto))),
                    Box::new(Expr::Pred(qualified)),
                ));
            }
            return Ok(Expr::Pred(Pred::Proto(proto)));
        }
        if matches!(w, "src" | "dst" | "host" | "net" | "port" | "portrange") {
            return Ok(Expr::Pred(self.qualified(None)?));
        }
        Err(self.unexpected(EXPECTED))
    }

    /// qualified := ["src" | "dst"] ("host" ADDR | "net" CIDR | "port" N | "portrange" N-N)
    fn qualified(&mut self, proto: Option<Proto>) -> Result<Pred, FilterError> {
        let dir = match word(self.peek()) {
            Some("src") => {
                self.next();
                Dir::Src
            }
            Some("dst") => {
                self.next();
                Dir::Dst
            }
            _ => Dir::Either,
        };
        let kw = self.peek().clone();
        match word(&kw) {
            Some("host") => {
                self.next();
                let addr = self.address(
                    proto,
                    "a host address (IPv4 or IPv6; names are not resolved)",
                )?;
                Ok(Pred::Host { dir, addr: addr.0 })
            }
            Some("net") => {
                self.next();
                self.net(dir, proto)
            }
            Some(k @ ("port" | "portrange")) => {
                let range = k == "portrange";
                if let Some(p @ (Proto::Icmp | Proto::Icmp6 | Proto::Arp)) = proto {
                    return Err(self.invalid(
                        &kw,
                        "qualifier",
                        format!("`{}` packets have no ports", p.keyword()),
                    ));
                }
                self.next();
                self.ports(dir, range)
            }
            _ => Err(self.unexpected("`host`, `net`, `port` or `portrange`")),
        }
    }

    /// An address word; with `ip`/`arp` it must be IPv4, with `ip6` IPv6.
    fn address(
        &mut self,
        proto: Option<Proto>,
        expected: &str,
    ) -> Result<(IpAddr, Token), FilterError> {
        let tok = self.peek().clone();
        let Some(addr) = word(&tok).and_then(|w| w.parse::<IpAddr>().ok()) else {
            return Err(self.unexpected(expected));
        };
        self.check_family(&tok, addr, proto)?;
        self.next();
        Ok((addr, tok))
    }

    fn check_family(
        &self,
        tok: &Token,
        addr: IpAddr,
        proto: Option<Proto>,
    ) -> Result<(), FilterError> {
        match (proto, addr) {
            (Some(p @ (Proto::Ip | Proto::Arp | Proto::Icmp)), IpAddr::V6(_)) => Err(self.invalid(
                tok,
                "address",
                format!("`{}` needs an IPv4 address", p.keyword()),
            )),
            (Some(p @ (Proto::Ip6 | Proto::Icmp6)), IpAddr::V4(_)) => Err(self.invalid(
                tok,
                "address",
                format!("`{}` needs an IPv6 address", p.keyword()),
            )),
            _ => Ok(()),
        }
    }

    fn net(&mut self, dir: Dir, proto: Option<Proto>) -> Result<Pred, FilterError> {
        const EXPECTED: &str = "a network (ADDRESS/PREFIX, e.g. 10.0.0.0/8 or fd00::/64)";
        let tok = self.peek().clone();
        let Some(w) = word(&tok) else {
            return Err(self.unexpected(EXPECTED));
        };
        let (addr_text, prefix_text) = match w.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (w, None),
        };
        let Ok(addr) = addr_text.parse::<IpAddr>() else {
            return Err(self.unexpected(EXPECTED));
        };
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(self.invalid(
                        &tok,
                        "network",
                        format!("the prefix length must be a number from 0 to {max}"),
                    ));
                }
            },
        };
        let host_bits = match addr {
            IpAddr::V4(a) => u32::from(a).checked_shl(u32::from(prefix)).unwrap_or(0) != 0,
            IpAddr::V6(a) => u128::from(a).checked_shl(u32::from(prefix)).unwrap_or(0) != 0,
        };
        if host_bits {
            return Err(self.invalid(
                &tok,
                "network",
                format!("bits are set beyond the /{prefix} prefix"),
            ));
        }
        self.check_family(&tok, addr, proto)?;
        self.next();
        Ok(Pred::Net { dir, addr, prefix })
    }

    fn ports(&mut self, dir: Dir, range: bool) -> Result<Pred, FilterError> {
        let tok = self.peek().clone();
        let expected = if range {
            "a port range (LOW-HIGH, e.g. 1024-65535)"
        } else {
            "a port number (0-65535; service names are not supported)"
        };
        let Some(w) = word(&tok) else {
            return Err(self.unexpected(expected));
        };
        let port = |s: &str| s.parse::<u16>().ok();
        let (lo, hi) = if range {
            match w.split_once('-').map(|(a, b)| (port(a), port(b))) {
                Some((Some(lo), Some(hi))) => (lo, hi),
                _ => return Err(self.unexpected(expected)),
            }
        } else {
            match port(w) {
                Some(p) => (p, p),
                None => return Err(self.unexpected(expected)),
            }
        };
        if lo > hi {
            return Err(self.invalid(&tok, "port range", "the low port is above the high port"));
        }
        self.next();
        Ok(Pred::Port { dir, lo, hi })
    }
}
