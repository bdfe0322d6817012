//! Template storage.

use sqlx::PgConnection;

use api::admin::{Locales, TemplateVariant as Variant};

/// Every locale of `name`, or `None` if there is no such template.
pub async fn get(conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<Locales>> {
    type Row = (
        String,
        Option<String>,
        String,
        Option<String>,
        Option<sqlx::types::Json<api::admin::DigestForm>>,
    );
    let rows: Vec<Row> =
        sqlx::query_as("SELECT locale, subject, text, html, digest FROM templates WHERE name = $1")
            .bind(name)
            .fetch_all(conn)
            .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .map(|(locale, subject, text, html, digest)| {
                (
                    locale,
                    Variant {
                        subject,
                        text,
                        html,
                        digest: digest.map(|d| d.0),
                    },
                )
            })
            .collect(),
    ))
}

/// Replaces every locale of `name`.
pub async fn replace(conn: &mut PgConnection, name: &str, locales: &Locales) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM templates WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    for (locale, v) in locales {
        sqlx::query(
            "INSERT INTO templates (name, locale, subject, text, html, digest)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(name)
        .bind(locale)
        .bind(&v.subject)
        .bind(&v.text)
        .bind(&v.html)
        .bind(v.digest.as_ref().map(sqlx::types::Json))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Deletes `name`; false if it did not exist.
pub async fn delete(conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query("DELETE FROM templates WHERE name = $1")
        .bind(name)
        .execute(conn)
        .await?
        .rows_affected()
        > 0)
}
