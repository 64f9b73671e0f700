/* gale TLS contexts: what Tornado's ssl_options (server) and HTTPRequest's ca_certs /
 * validate_cert / client_cert (client) describe, on OpenSSL 3.
 *
 * A context holds the certificates and settings shared by many connections; a stream becomes a
 * TLS stream with gale_stream_start_tls() (net/iostream.h), and the TCP and HTTP servers take a
 * context to speak TLS on every connection they accept (gale_server_set_tls, the `tls` field of
 * gale_http_server_opts).
 *
 * Server contexts: certificate chain and key from PEM files, TLS 1.2 at least, renegotiation
 * refused, ALPN answering "http/1.1" (a client that offers only protocols the server does not
 * speak gets the no_application_protocol alert, as RFC 7301 3.2 asks), session resumption by
 * tickets (TLS 1.3 and 1.2; the server keeps no session cache), more certificates chosen by the
 * SNI host name (gale_tls_add_sni), and gale_tls_reload() re-reading every file without touching
 * open connections (they keep the certificates they started with).
 *
 * Client contexts: the peer's certificate is verified by default, against the system's CA store
 * (/etc/ssl/certs) or `ca_certs`; gale_stream_start_tls() checks the host name (an IP address
 * against the certificate's IP entries) and sends it as SNI. `validate_cert = false` skips both
 * checks (tests, private networks); `certfile`/`keyfile` present a client certificate.
 *
 * Built without OpenSSL (-DGALE_TLS=OFF), every function here returns -ENOTSUP and
 * gale_tls_available() is false.
 *
 * Threads: a context may be shared by streams on several loops; gale_tls_reload and
 * gale_tls_add_sni belong to the thread that created the context, as does the last unref.
 */
#ifndef GALE_NET_TLS_H
#define GALE_NET_TLS_H

#include <stdbool.h>

typedef struct gale_tls_ctx gale_tls_ctx;

typedef struct gale_tls_opts {
    const char *certfile; /* PEM certificate chain: the server's (required for a server), or
                           * a client certificate (optional) */
    const char *keyfile;  /* PEM private key; NULL: read it from certfile */
    const char *ca_certs; /* client: CA bundle that verifies the server (NULL: system store);
                           * server: CAs whose client certificates are required (NULL: none asked) */
    bool validate_cert;   /* client: verify the certificate and the host name (default true) */
    const char *alpn;     /* comma-separated protocols: a server's ("http/1.1" by default),
                           * a client's offer (NULL: none) */
    const char *ciphers;  /* TLS 1.2 cipher list (OpenSSL syntax); NULL: OpenSSL's defaults */
    double handshake_timeout; /* seconds, default 10: a handshake not done by then closes the
                               * stream with -ETIMEDOUT; 0: none */
} gale_tls_opts;

/* Fills `o` with the defaults above. */
void gale_tls_opts_init(gale_tls_opts *o);

/* True when gale was built with OpenSSL. */
bool gale_tls_available(void);

/* Creates a server context from `o` (certfile required). Reads the files now: a missing file, a
 * key that does not match the certificate or a bad PEM is logged (naming the file and OpenSSL's
 * reason) and returns GALE_ETLS. Returns 0, -EINVAL, -ENOMEM, GALE_ETLS or -ENOTSUP. The caller
 * holds one reference: gale_tls_unref() when done (servers and streams take their own). */
int gale_tls_server_new(const gale_tls_opts *o, gale_tls_ctx **out);

/* Creates a client context. Returns as gale_tls_server_new. */
int gale_tls_client_new(const gale_tls_opts *o, gale_tls_ctx **out);

/* Server: serves `certfile`/`keyfile` to clients whose SNI is `host` (exact, case-insensitive;
 * "*.example.com" matches one label). Clients without SNI or with another name get the main
 * certificate. Returns 0, -EINVAL (client context, NULL argument), -ENOMEM, GALE_ETLS. */
int gale_tls_add_sni(gale_tls_ctx *ctx, const char *host, const char *certfile,
                     const char *keyfile);

/* Re-reads every certificate and key of a server context (main and SNI) from their files, for
 * new connections; open connections keep theirs. All or nothing: when any file fails, nothing
 * changes and the error is logged. Returns 0, -EINVAL, GALE_ETLS, -ENOMEM. */
int gale_tls_reload(gale_tls_ctx *ctx);

bool gale_tls_is_server(const gale_tls_ctx *ctx);
double gale_tls_handshake_timeout(const gale_tls_ctx *ctx);

void gale_tls_ref(gale_tls_ctx *ctx);
void gale_tls_unref(gale_tls_ctx *ctx); /* NULL is fine */

#endif
