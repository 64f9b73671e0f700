/* The libwebsockets baseline for bench/ws_bench.sh: lws's own minimal echo server
 * (minimal-examples/ws-server/minimal-ws-server-echo and its protocol_lws_minimal_server_echo.c,
 * CC0, as the lws 4.1 docs show it): messages (or their fragments) go into a per-connection ring
 * and are written back from LWS_CALLBACK_SERVER_WRITEABLE, with rx flow control when the ring is
 * nearly full. No permessage-deflate (the benchmark client does not offer it).
 *
 *     lws_echo [PORT]        (default 7681)
 *
 * Built only when libwebsockets is installed (Debian libwebsockets-dev). */
#include <libwebsockets.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define RING_DEPTH 4096

struct msg {
    void *payload; /* malloc'd: LWS_PRE + len */
    size_t len;
    char binary, first, final;
};

struct pss {
    struct lws_ring *ring;
    uint32_t tail;
    uint8_t flow_controlled : 1;
    uint8_t write_consume_pending : 1;
};

static int interrupted;

static void destroy_message(void *_msg)
{
    struct msg *msg = _msg;
    free(msg->payload);
    msg->payload = NULL;
    msg->len = 0;
}

static int callback_echo(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    struct pss *pss = user;
    const struct msg *pmsg;
    struct msg amsg;
    int m, n, flags;

    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        pss->ring = lws_ring_create(sizeof(struct msg), RING_DEPTH, destroy_message);
        if (!pss->ring)
            return 1;
        pss->tail = 0;
        break;

    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (pss->write_consume_pending) {
            lws_ring_consume_single_tail(pss->ring, &pss->tail, 1);
            pss->write_consume_pending = 0;
        }
        pmsg = lws_ring_get_element(pss->ring, &pss->tail);
        if (!pmsg)
            break;
        flags = lws_write_ws_flags(pmsg->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT, pmsg->first,
                                   pmsg->final);
        m = lws_write(wsi, ((unsigned char *)pmsg->payload) + LWS_PRE, pmsg->len,
                      (enum lws_write_protocol)flags);
        if (m < (int)pmsg->len)
            return -1;
        pss->write_consume_pending = 1;
        lws_callback_on_writable(wsi);
        if (pss->flow_controlled &&
            (int)lws_ring_get_count_free_elements(pss->ring) > RING_DEPTH - 5) {
            lws_rx_flow_control(wsi, 1);
            pss->flow_controlled = 0;
        }
        break;

    case LWS_CALLBACK_RECEIVE:
        amsg.first = (char)lws_is_first_fragment(wsi);
        amsg.final = (char)lws_is_final_fragment(wsi);
        amsg.binary = (char)lws_frame_is_binary(wsi);
        n = (int)lws_ring_get_count_free_elements(pss->ring);
        if (!n)
            break;
        amsg.len = len;
        amsg.payload = malloc(LWS_PRE + len);
        if (!amsg.payload)
            break;
        memcpy((char *)amsg.payload + LWS_PRE, in, len);
        if (!lws_ring_insert(pss->ring, &amsg, 1)) {
            destroy_message(&amsg);
            break;
        }
        lws_callback_on_writable(wsi);
        if (n < 3 && !pss->flow_controlled) {
            pss->flow_controlled = 1;
            lws_rx_flow_control(wsi, 0);
        }
        break;

    case LWS_CALLBACK_CLOSED: lws_ring_destroy(pss->ring); break;

    default: break;
    }
    return 0;
}

static struct lws_protocols protocols[] = {
    {"lws-minimal-server-echo", callback_echo, sizeof(struct pss), 1024, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void on_signal(int sig) { interrupted = 1; }

int main(int argc, char **argv)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
    info.port = argc > 1 ? atoi(argv[1]) : 7681;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    struct lws_context *context = lws_create_context(&info);
    if (!context)
        return 1;
    int n = 0;
    while (n >= 0 && !interrupted)
        n = lws_service(context, 0);
    lws_context_destroy(context);
    return 0;
}
