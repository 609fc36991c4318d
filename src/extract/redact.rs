//! Keeps the API key out of every message built from what a server sent:
//! some gateways and firewalls echo the request's `Authorization` header in
//! their error pages, and such a page's text would otherwise travel into
//! the summary, the logs, `--summary-json` and the run history.

/// What stands in for a secret in a message.
pub const REDACTED: &str = "<redacted>";

/// Prefixes (ASCII case ignored) of a credential in a header value: what
/// follows each, up to a delimiter, is the credential.
const CREDENTIAL_PREFIXES: [&str; 2] = ["lucca application=", "bearer "];

/// `text` with `secret` (the run's API key) and any value following
/// `lucca application=` or `Bearer ` replaced by [`REDACTED`].
pub fn redact(text: &str, secret: &str) -> String {
    let mut out = if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, REDACTED)
    };
    for prefix in CREDENTIAL_PREFIXES {
        out = redact_after(&out, prefix);
    }
    out
}

/// `text` with the token after each occurrence of `prefix` (ASCII case
/// ignored) replaced by [`REDACTED`].
fn redact_after(text: &str, prefix: &str) -> String {
    // ASCII lowercasing keeps every byte offset, and the prefixes are ASCII.
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = lower.get(from..).and_then(|rest| rest.find(prefix)) {
        let start = from + found + prefix.len();
        let rest = text.get(start..).unwrap_or_default();
        let len = rest
            .find(|c: char| c.is_whitespace() || "\"'<>,;&()[]{}\\".contains(c))
            .unwrap_or(rest.len());
        if len > 0 && rest.get(..len) != Some(REDACTED) {
            out.push_str(text.get(copied..start).unwrap_or_default());
            out.push_str(REDACTED);
            copied = start + len;
        }
        from = start + len;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_and_any_credential_value_are_replaced() {
        let key = "k3y-0123456789";
        for (text, expected) in [
            (
                "Authorization: lucca application=k3y-0123456789",
                "Authorization: lucca application=<redacted>",
            ),
            (
                "bad header <pre>Lucca Application=other-key</pre>",
                "bad header <pre>Lucca Application=<redacted></pre>",
            ),
            (
                "Authorization=BEARER abc.def, ok",
                "Authorization=BEARER <redacted>, ok",
            ),
            ("key k3y-0123456789 unknown", "key <redacted> unknown"),
            (
                "lucca application=a lucca application=b",
                "lucca application=<redacted> lucca application=<redacted>",
            ),
            ("nothing secret, é ü", "nothing secret, é ü"),
            (
                "ends with lucca application=",
                "ends with lucca application=",
            ),
        ] {
            assert_eq!(redact(text, key), expected, "{text}");
        }
        // No key known: the patterns alone.
        assert_eq!(
            redact("x lucca application=zz", ""),
            "x lucca application=<redacted>"
        );
    }
}
