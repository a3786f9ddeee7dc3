-- Templates (issue 17): a tenant's templates and their immutable versions. A version is a draft
-- until it is first published (published_at); `templates.published_version` is the one sends get
-- by default. Aliases are unique per tenant. Shared by the tenant's live and test keys.
CREATE TABLE templates (
    id                text PRIMARY KEY,
    tenant_id         text NOT NULL REFERENCES tenants (id),
    name              text NOT NULL,
    alias             text,
    latest_version    integer NOT NULL,
    published_version integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- The accept path looks a template up by (tenant, id) or (tenant, alias): one index probe each.
CREATE UNIQUE INDEX templates_tenant_alias ON templates (tenant_id, alias) WHERE alias IS NOT NULL;
CREATE INDEX templates_tenant_id ON templates (tenant_id, id);

CREATE TABLE template_versions (
    template_id  text NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    version      integer NOT NULL,
    subject      text NOT NULL,
    html         text NOT NULL,
    text         text,
    variables    jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    PRIMARY KEY (template_id, version)
);

-- The email log records which template (and version) rendered an email; plain text, not a
-- foreign key: the log outlives a deleted template.
ALTER TABLE emails
    ADD COLUMN template_id text,
    ADD COLUMN template_version integer;
