/* Helpers shared by the Check suites: running a loop until a condition holds (never a bare sleep),
 * plain blocking sockets on 127.0.0.1 with port 0, and starting the apps under test. */
#ifndef GALE_TESTS_TESTUTIL_H
#define GALE_TESTS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/loop.h"

/* Runs `loop` until `pred(arg)` is true or `timeout` seconds pass; checks after every iteration
 * that ran something and at least every millisecond. Returns true if pred held. */
bool test_wait_until(gale_loop *loop, bool (*pred)(void *arg), void *arg, double timeout);

/* Runs `fn(arg)` on a thread of its own while this thread runs `loop`, until `fn` returns or
 * `timeout` seconds pass. Returns true if it returned (the thread is joined); on false the
 * thread is left running, detached, and the caller should fail the test. */
bool test_run_thread(gale_loop *loop, void (*fn)(void *arg), void *arg, double timeout);

/* Runs `loop` for `seconds` (for "nothing more happens" checks). */
void test_run_for(gale_loop *loop, double seconds);

/* A blocking listening TCP socket on 127.0.0.1, port 0; stores the port. Returns the fd. */
int test_listen_tcp(int *port);
/* A blocking TCP connection to 127.0.0.1:port. Returns the fd or -1. */
int test_connect_tcp(int port);
/* Sets SO_RCVTIMEO/SO_SNDTIMEO on a blocking socket so a test can never hang on it. */
void test_set_timeouts(int fd, double seconds);
/* For a TCP connection `fd` whose other end is a socket of this process (a server the suite runs
 * in-process): waits until every byte sent on `fd` has been received by that socket and read from
 * it by its owner, or the owner has closed the connection. Sending the next piece only then makes
 * a cut between two reads certain, where a pause only makes it likely. Returns false if neither
 * happens within `timeout` seconds. */
bool test_wait_peer_read(int fd, double timeout);
/* Writes all of buf (blocking). Returns 0 or -errno. */
int test_write_all(int fd, const void *buf, size_t len);
/* Reads until EOF, timeout or `max` bytes into a malloc'ed buffer; *len gets the size. */
char *test_read_all(int fd, size_t max, size_t *len);

/* Path of an app binary: $GALE_BIN_DIR/name (static storage). */
const char *test_app_path(const char *name);
/* Starts build/bin/<name> with argv (argv[0] ignored, NULL-terminated, at most 62 arguments),
 * its stdout and stderr on `out_fd` and `err_fd` (-1: this process's own). Returns the pid, or -1
 * if fork failed; the child exits 127 if the program cannot run. */
pid_t test_spawn_app(const char *name, char *const argv[], int out_fd, int err_fd);
/* Starts an app with argv (argv[0] ignored, NULL-terminated) and waits until it accepts TCP
 * connections on 127.0.0.1:port (up to 10 s). Returns the pid, or -1. */
pid_t test_start_app(const char *name, char *const argv[], int port);
/* A TCP port free on every address, below the ephemeral range (so no outgoing connection of a
 * suite running alongside can take it before the app binds it). -1 if none is found. */
int test_free_port(void);
/* SIGTERM, then SIGKILL after 5 s; reaps. Returns the wait status. */
int test_stop_app(pid_t pid);
/* The pids of `parent`'s children (at most `max`), from /proc/PID/stat. Returns how many. */
int test_children_of(pid_t parent, pid_t *out, int max);

#endif
