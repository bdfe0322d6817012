-- Templates: one row per name × locale (minijinja source; HTML parts auto-escaped).
CREATE TABLE templates (
    name       TEXT        NOT NULL,
    locale     TEXT        NOT NULL,
    subject    TEXT,
    text       TEXT        NOT NULL,
    html       TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (name, locale)
);

-- A notification rendered from a template keeps one rendering per recipient locale
-- ({"de-AT": {subject, text, html?}, ...}); `content` holds the default locale's.
ALTER TABLE notifications ADD COLUMN localized JSONB;
ALTER TABLE notifications ADD COLUMN template TEXT;

INSERT INTO templates (name, locale, subject, text, html) VALUES
  ('welcome', 'en', 'Welcome!',
   'Welcome aboard. You can choose how we reach you in your notification settings.',
   '<p>Welcome aboard. You can choose how we reach you in your notification settings.</p>'),
  ('welcome', 'de', 'Willkommen!',
   'Willkommen an Bord. In deinen Benachrichtigungseinstellungen legst du fest, wie wir dich erreichen.',
   '<p>Willkommen an Bord. In deinen Benachrichtigungseinstellungen legst du fest, wie wir dich erreichen.</p>');
