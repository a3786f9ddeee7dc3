-- Issue 21: a template created or updated through the Resend-compatible API (/resend/templates)
-- keeps its Resend source form (`{{{VAR}}}` html/subject/text, from, reply_to and the variables as
-- [{key, type, fallback_value}]), so GET/list answer what the tenant wrote. What sends render is
-- the translated Jinja2 version in template_versions (one renderer); this row follows the latest.
CREATE TABLE resend_templates (
    template_id text PRIMARY KEY REFERENCES templates (id) ON DELETE CASCADE,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    source      jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
