/* The HTTP client's TLS contexts: one per set of request options (CA bundle, validate_cert,
 * client certificate), made on first use and kept until the client is freed, because making one
 * reads the CA store (milliseconds) while a request should cost microseconds. A fetch only points
 * at its context; a pooled https connection's key names the context, so a connection verified
 * under one set of options never serves a request made with another. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "http/httpclient_internal.h"

struct gale__tls_entry {
    char *ca_certs, *client_cert, *client_key;
    bool validate;
    gale_tls_ctx *ctx;
};

static bool same(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

static char *dup_or_null(const char *s, bool *oom)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *oom = true;
    return d;
}

static void entry_free(struct gale__tls_entry *e)
{
    gale_tls_unref(e->ctx);
    free(e->ca_certs);
    free(e->client_cert);
    free(e->client_key);
}

int gale__client_tls(gale_http_client *c, struct gale__fetch *f)
{
    if (!gale_tls_available())
        return -ENOTSUP;
    for (size_t i = 0; i < c->n_tls; i++) {
        struct gale__tls_entry *e = &c->tls[i];
        if (e->validate == f->validate_cert && same(e->ca_certs, f->ca_certs) &&
            same(e->client_cert, f->client_cert) && same(e->client_key, f->client_key)) {
            f->tls = e->ctx;
            return 0;
        }
    }
    gale_tls_opts o;
    gale_tls_opts_init(&o);
    o.validate_cert = f->validate_cert;
    o.ca_certs = f->ca_certs;
    o.certfile = f->client_cert;
    o.keyfile = f->client_key;
    o.handshake_timeout = 0; /* the request's own timeouts bound the handshake */
    struct gale__tls_entry e = {.validate = f->validate_cert};
    bool oom = false;
    e.ca_certs = dup_or_null(f->ca_certs, &oom);
    e.client_cert = dup_or_null(f->client_cert, &oom);
    e.client_key = dup_or_null(f->client_key, &oom);
    struct gale__tls_entry *grown = oom ? NULL : realloc(c->tls, (c->n_tls + 1) * sizeof *grown);
    int rc = grown ? gale_tls_client_new(&o, &e.ctx) : -ENOMEM;
    if (grown)
        c->tls = grown;
    if (rc < 0) {
        entry_free(&e);
        return rc;
    }
    c->tls[c->n_tls++] = e;
    f->tls = e.ctx;
    return 0;
}

void gale__client_tls_free(gale_http_client *c)
{
    for (size_t i = 0; i < c->n_tls; i++)
        entry_free(&c->tls[i]);
    free(c->tls);
    c->tls = NULL;
    c->n_tls = 0;
}
