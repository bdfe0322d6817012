//! Templates: named, one variant per locale, rendered with minijinja at intake — so a missing
//! template, a missing variable or a syntax error is a 422 to the caller, never a failed
//! delivery later. HTML parts are auto-escaped, text parts are not. Locale fallback: the
//! recipient's locale (`de-AT`), then its language (`de`), then the deployment default.

use std::collections::BTreeMap;

use common::events::Content;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

/// A template's variants by locale, as the admin API carries them.
pub use api::admin::{Locales, TemplateVariant as Variant};

/// The most work one rendering may do (minijinja fuel, roughly one unit per instruction): a
/// template looping a million times stops here with an error instead of holding the request.
const FUEL: u64 = 200_000;

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

/// Checks that every part of `v` compiles; the error names the part.
pub fn check(v: &Variant) -> Result<(), String> {
    let env = env();
    for (part, src) in parts(v) {
        env.template_from_named_str(part, src)
            .map_err(|e| format!("{part}: {e}"))?;
    }
    Ok(())
}

fn parts(v: &Variant) -> Vec<(&'static str, &str)> {
    let mut out = vec![("text.txt", v.text.as_str())];
    if let Some(s) = &v.subject {
        out.push(("subject.txt", s));
    }
    if let Some(h) = &v.html {
        out.push(("body.html", h));
    }
    if let Some(d) = &v.digest {
        out.push(("digest.text.txt", d.text.as_str()));
        if let Some(s) = &d.subject {
            out.push(("digest.subject.txt", s));
        }
        if let Some(h) = &d.html {
            out.push(("digest.body.html", h));
        }
    }
    out
}

/// Why a rendering failed: the data (an undefined variable…) or the template itself (it runs
/// too long or renders too much, whatever the data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    Data(String),
    Template(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Data(m) | Self::Template(m) => f.write_str(m),
        }
    }
}

/// Renders `v` with `data`; an undefined variable is an error naming it. Bounded: at most
/// [`FUEL`] of work and the same sizes as inline content.
pub fn render(v: &Variant, data: &serde_json::Value) -> Result<Content, RenderError> {
    render_parts(v.subject.as_deref(), &v.text, v.html.as_deref(), data)
}

/// Renders a template's digest form with a digest's context (`crate::folding`).
pub fn render_digest(
    form: &api::admin::DigestForm,
    ctx: &serde_json::Value,
) -> Result<Content, RenderError> {
    render_parts(
        form.subject.as_deref(),
        &form.text,
        form.html.as_deref(),
        ctx,
    )
}

fn render_parts(
    subject: Option<&str>,
    text: &str,
    html: Option<&str>,
    data: &serde_json::Value,
) -> Result<Content, RenderError> {
    let env = env();
    let ctx = minijinja::Value::from(minijinja::value::Serde(data));
    let one = |name: &str, src: &str| {
        env.render_named_str(name, src, ctx.clone()).map_err(|e| {
            if e.kind() == minijinja::ErrorKind::OutOfFuel {
                RenderError::Template(format!(
                    "{name} does too much work to render (a loop too long?)"
                ))
            } else {
                RenderError::Data(format!("{e}"))
            }
        })
    };
    let content = Content {
        subject: subject.map(|s| one("subject.txt", s)).transpose()?,
        text: one("text.txt", text)?,
        html: html.map(|h| one("body.html", h)).transpose()?,
        data: Some(data.clone()).filter(|d| !d.is_null()),
    };
    if let Some(problem) = crate::request::content_too_large(&content.text, content.html.as_deref())
    {
        return Err(RenderError::Template(format!("the rendering {problem}")));
    }
    if content
        .subject
        .as_ref()
        .is_some_and(|s| s.chars().count() > crate::request::MAX_SUBJECT_CHARS)
    {
        return Err(RenderError::Template(format!(
            "the rendered subject is longer than {} characters",
            crate::request::MAX_SUBJECT_CHARS
        )));
    }
    Ok(content)
}

/// The variant for `locale`: exact, then language, then `default`, then any.
pub fn pick<'a>(
    locales: &'a Locales,
    locale: Option<&str>,
    default: &str,
) -> Option<(&'a str, &'a Variant)> {
    let wanted = locale.unwrap_or(default);
    let language = wanted.split('-').next().unwrap_or(wanted);
    [wanted, language, default]
        .into_iter()
        .find_map(|l| locales.get_key_value(l))
        .or_else(|| locales.iter().next())
        .map(|(k, v)| (k.as_str(), v))
}

/// Which locales a template request is rendered in.
pub enum Wanted<'a> {
    /// Those of the deliveries that will be sent (`planning::locales_to_render`).
    Locales(&'a [Option<&'a str>]),
    /// Every locale the template has (a send to a topic: its subscribers are planned later,
    /// and each gets the rendering of its locale or language, `delivery::dispatch::content_for`).
    All,
}

/// Renders a template request: the default locale into `req.content`, and one rendering per
/// locale `wanted` into `req.localized`. A missing template or a render error is a 422 naming
/// `template` or `data`; nothing has been written yet.
pub async fn apply(
    conn: &mut sqlx::PgConnection,
    req: &mut crate::request::SendRequest,
    wanted: Wanted<'_>,
    default_locale: &str,
    digest_form_needed: bool,
) -> Result<(), common::problem::ApiError> {
    use common::problem::ApiError;
    let Some(name) = req.template.clone() else {
        return Ok(());
    };
    let locales = crate::db::templates::get(conn, &name)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field("template", format!("no template is named `{name}`"))
        })?;
    let data = req.data.clone().unwrap_or_else(|| serde_json::json!({}));
    let render_for = |locale: Option<&str>| {
        let (chosen, v) =
            pick(&locales, locale, default_locale).expect("a template has at least one locale");
        if digest_form_needed && v.digest.is_none() {
            return Err(ApiError::invalid_field(
                "digest",
                format!(
                    "template `{name}` ({chosen}) has no digest form: add one (`digest` of the locale) or send without `digest`"
                ),
            ));
        }
        render(v, &data).map_err(|e| {
            let field = match e {
                RenderError::Data(_) => "data",
                RenderError::Template(_) => "template",
            };
            ApiError::invalid_field(field, format!("template `{name}` ({chosen}): {e}"))
        })
    };
    let all: Vec<Option<&str>>;
    let wanted = match wanted {
        Wanted::Locales(l) => l,
        Wanted::All => {
            all = locales.keys().map(|k| Some(k.as_str())).collect();
            &all
        }
    };
    render_in(req, wanted, render_for)
}

/// Fills `req.content` (the default locale) and `req.localized` (each of `locales` once) with
/// what `render_for(locale)` makes: how a template request and a digest are rendered alike.
pub fn render_in<E>(
    req: &mut crate::request::SendRequest,
    locales: &[Option<&str>],
    render_for: impl Fn(Option<&str>) -> Result<Content, E>,
) -> Result<(), E> {
    req.content = render_for(None)?;
    let mut localized = BTreeMap::new();
    for &locale in locales {
        let key = locale.unwrap_or_default().to_owned();
        if let std::collections::btree_map::Entry::Vacant(slot) = localized.entry(key) {
            slot.insert(render_for(locale)?);
        }
    }
    req.localized = Some(localized);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn variant(text: &str, html: Option<&str>) -> Variant {
        Variant {
            subject: Some("Hi {{ name }}".into()),
            text: text.into(),
            html: html.map(Into::into),
            digest: None,
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let v = variant("Hello {{ name }}", Some("<p>Hello {{ name }}</p>"));
        let c = render(&v, &json!({ "name": "<b>Bo & Co</b>" })).unwrap();
        assert_eq!(c.text, "Hello <b>Bo & Co</b>");
        assert_eq!(
            c.html.unwrap(),
            "<p>Hello &lt;b&gt;Bo &amp; Co&lt;&#x2f;b&gt;</p>"
        );
        assert_eq!(c.subject.unwrap(), "Hi <b>Bo & Co</b>");
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_it() {
        let err = render(&variant("Hello {{ name }}", None), &json!({})).unwrap_err();
        assert!(
            matches!(&err, RenderError::Data(m) if m.contains("undefined")),
            "{err}"
        );
        assert!(check(&variant("Hello {{ name", None)).is_err());
    }

    #[test]
    fn a_template_that_runs_too_long_or_renders_too_much_is_the_templates_error() {
        let endless = variant(
            "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
            None,
        );
        let err = render(&endless, &json!({ "name": "Bo" })).unwrap_err();
        assert!(
            matches!(&err, RenderError::Template(m) if m.contains("too much work")),
            "{err}"
        );
        // Little work, a lot of output: 10 × 20 kB.
        let big = variant("{% for i in range(10) %}{{ blob }}{% endfor %}", None);
        let err = render(&big, &json!({ "name": "Bo", "blob": "y".repeat(20_000) })).unwrap_err();
        assert!(
            matches!(&err, RenderError::Template(m) if m.contains("too large")),
            "{err}"
        );
    }

    #[test]
    fn locales_fall_back_to_the_language_then_the_default() {
        let locales: Locales = [
            ("en".to_owned(), variant("en", None)),
            ("de".to_owned(), variant("de", None)),
        ]
        .into();
        assert_eq!(pick(&locales, Some("de-AT"), "en").unwrap().0, "de");
        assert_eq!(pick(&locales, Some("fr"), "en").unwrap().0, "en");
        assert_eq!(pick(&locales, None, "en").unwrap().0, "en");
    }
}
