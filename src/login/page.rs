//! The few HTML pages of browser sign-in: the issuer chooser and the error page. Every
//! text that reaches them is HTML-escaped.

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A small complete page with `title` and a body of (already escaped) `html`.
pub fn page(title: &str, html: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t}</title></head>\n<body><main><h1>{t}</h1>\n{html}\n</main></body></html>\n",
        t = escape(title)
    )
}

/// The page a failed sign-in ends on: what happened, and a link to try again.
pub fn error_page(title: &str, detail: &str) -> String {
    page(
        title,
        &format!(
            "<p>{}</p>\n<p><a href=\"/oauth2/start\">Sign in again</a></p>",
            escape(detail)
        ),
    )
}

/// The chooser: one link per issuer, `(label, href)`.
pub fn chooser(links: &[(String, String)]) -> String {
    let items: String = links
        .iter()
        .map(|(label, href)| {
            format!(
                "<li><a href=\"{}\">{}</a></li>\n",
                escape(href),
                escape(label)
            )
        })
        .collect();
    page("Sign in", &format!("<ul>\n{items}</ul>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        let p = error_page("Sign-in failed", "<script>alert('x')</script>&\"");
        assert!(p.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
        assert!(!p.contains("<script>"));
        let c = chooser(&[("A\"<b>".into(), "/oauth2/start?issuer=a&rd=%2F".into())]);
        assert!(c.contains("href=\"/oauth2/start?issuer=a&amp;rd=%2F\""));
        assert!(c.contains("A&quot;&lt;b&gt;"));
    }
}
