/* Suite "options": parsing argv arrays against an option table (both value syntaxes, every type,
 * ranges, bool flags, aliases, one-letter options, positional arguments, --), the errors that name
 * the option, --help and --version as statuses, the usage text, and the exits of
 * gale_options_parse_or_exit(). */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/options.h"
#include "core/version.h"

/* The variables of one table, reset to the defaults before each test. */
static int port;
static size_t max_body;
static double timeout;
static const char *socket_path;
static bool quiet, xheaders;
static char headers[256];
static int nheaders;

static int add_header(const char *value, void *arg)
{
    ck_assert_ptr_eq(arg, headers);
    if (!strchr(value, ':'))
        return -EINVAL;
    strncat(headers, value, sizeof headers - strlen(headers) - 2);
    strcat(headers, ";");
    nheaders++;
    return 0;
}

static gale_option table[] = {
    GALE_OPTION_INT("port", &port, 0, 65535, "N", "listen on port N"),
    GALE_OPTION_SIZE("max-body", &max_body, 0, 0, "BYTES", "largest body"),
    GALE_OPTION_DOUBLE("timeout", &timeout, 0.001, 3600, "S", "seconds"),
    GALE_OPTION_STRING("unix-socket", &socket_path, "PATH", "listen on a unix socket"),
    GALE_OPTION_BOOL("quiet", &quiet, "no access log"),
    GALE_OPTION_BOOL("xheaders", &xheaders, "trust X-Real-IP"),
    GALE_OPTION_FUNC("header", add_header, headers, "'Name: value'", "extra header"),
    {0},
};

static gale_options spec = {
    .prog = "prog",
    .args = "URL...",
    .description = "A program that tests the options module.",
    .epilog = "routes:\n  GET /   hello",
    .positional = true,
    .options = table,
};

static void reset(void)
{
    port = 8879;
    max_body = 1048576;
    timeout = 20;
    socket_path = NULL;
    quiet = xheaders = false;
    headers[0] = '\0';
    nheaders = 0;
    table[4].alias = "no-access-log";
    table[4].short_name = 'q';
    table[6].short_name = 'H';
    spec.positional = true;
}

/* Parses a NULL-terminated list (argv[0] included); *argc gets the count after parsing. */
#define PARSE(argc_out, err, ...) parse_list((char *[]){__VA_ARGS__, NULL}, argc_out, err)

static char *saved_argv[32];

static int parse_list(char **argv, int *argc_out, char *err)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    memcpy(saved_argv, argv, (size_t)(argc + 1) * sizeof *argv);
    int rc = gale_options_parse(&spec, &argc, saved_argv, err, 256);
    if (argc_out)
        *argc_out = argc;
    return rc;
}

START_TEST(test_options_both_value_syntaxes)
{
    char err[256];
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--port", "9000"), 0);
    ck_assert_int_eq(port, 9000);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--port=9001", "--timeout", "2.5"), 0);
    ck_assert_int_eq(port, 9001);
    ck_assert(timeout == 2.5);
    ck_assert_str_eq(err, "");
    /* '-' and '_' are the same in names, as Tornado's options. */
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--max_body=5", "--unix_socket", "/tmp/s"), 0);
    ck_assert_uint_eq(max_body, 5);
    ck_assert_str_eq(socket_path, "/tmp/s");
    /* A value may start with a dash when it is a separate argument. */
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--unix-socket", "-odd"), 0);
    ck_assert_str_eq(socket_path, "-odd");
}
END_TEST

START_TEST(test_options_bool_flag_alias_and_explicit_value)
{
    char err[256];
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--quiet"), 0);
    ck_assert(quiet);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--quiet=false"), 0);
    ck_assert(!quiet);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--no-access-log"), 0);
    ck_assert(quiet);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--no_access_log=0", "--xheaders=yes"), 0);
    ck_assert(!quiet);
    ck_assert(xheaders);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "-q"), 0);
    ck_assert(quiet);
    /* A bool never takes the next argument as its value: it is a positional one. */
    int argc;
    ck_assert_int_eq(PARSE(&argc, err, "prog", "--xheaders", "false"), 0);
    ck_assert(xheaders);
    ck_assert_int_eq(argc, 2);
    ck_assert_str_eq(saved_argv[1], "false");
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--quiet=maybe"), -EINVAL);
    ck_assert_str_eq(err, "invalid value 'maybe' for --quiet: not true or false");
}
END_TEST

START_TEST(test_options_short_options_and_repeats)
{
    char err[256];
    ck_assert_int_eq(PARSE(NULL, err, "prog", "-H", "A: 1", "--header=B: 2", "-HC: 3"), 0);
    ck_assert_int_eq(nheaders, 3);
    ck_assert_str_eq(headers, "A: 1;B: 2;C: 3;");
    ck_assert_int_eq(PARSE(NULL, err, "prog", "-H", "nocolon"), -EINVAL);
    ck_assert_str_eq(err, "invalid value 'nocolon' for -H (want 'Name: value')");
    ck_assert_int_eq(PARSE(NULL, err, "prog", "-Z"), -EINVAL);
    ck_assert_str_eq(err, "unknown option '-Z'");
    ck_assert_int_eq(PARSE(NULL, err, "prog", "-qq"), -EINVAL); /* no bundling */
    ck_assert_str_eq(err, "unknown option '-qq'");
}
END_TEST

START_TEST(test_options_positional_kept_in_order)
{
    char err[256];
    int argc;
    ck_assert_int_eq(
        PARSE(&argc, err, "prog", "u1", "--port", "1", "u2", "-", "--", "--port", "-H"), 0);
    ck_assert_int_eq(port, 1);
    ck_assert_int_eq(argc, 6);
    ck_assert_str_eq(saved_argv[0], "prog");
    ck_assert_str_eq(saved_argv[1], "u1");
    ck_assert_str_eq(saved_argv[2], "u2");
    ck_assert_str_eq(saved_argv[3], "-");
    ck_assert_str_eq(saved_argv[4], "--port"); /* after --: not an option */
    ck_assert_str_eq(saved_argv[5], "-H");
    ck_assert_ptr_null(saved_argv[6]);

    spec.positional = false;
    ck_assert_int_eq(PARSE(&argc, err, "prog", "--port", "2", "stray"), -EINVAL);
    ck_assert_str_eq(err, "unexpected argument 'stray'");
}
END_TEST

START_TEST(test_options_errors_name_the_option)
{
    char err[256];
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--bogus"), -EINVAL);
    ck_assert_str_eq(err, "unknown option '--bogus'");
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--bogus=3"), -EINVAL);
    ck_assert_str_eq(err, "unknown option '--bogus'");
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--port"), -EINVAL);
    ck_assert_str_eq(err, "option --port needs a value (N)");
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--port", "abc"), -EINVAL);
    ck_assert_str_eq(err, "invalid value 'abc' for --port: not a whole number");
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--port=12x"), -EINVAL);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--port="), -EINVAL);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--port", " 5"), -EINVAL);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--port", "70000"), -ERANGE);
    ck_assert_str_eq(err, "value '70000' for --port is out of range (0..65535)");
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--port", "-1"), -ERANGE);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--port", "99999999999999999999999"), -ERANGE);
    ck_assert_int_eq(port, 8879); /* none of these stored anything */
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--max-body", "-5"), -EINVAL);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--max-body", "+5"), -EINVAL);
    ck_assert_uint_eq(max_body, 1048576);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--timeout", "0"), -ERANGE);
    ck_assert_str_eq(err, "value '0' for --timeout is out of range (0.001..3600)");
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--timeout", "nan"), -EINVAL);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--timeout", "inf"), -ERANGE);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--timeout", "1s"), -EINVAL);
    ck_assert_str_eq(err, "invalid value '1s' for --timeout: not a number");
    ck_assert(timeout == 20);
    /* A long option name does not overflow the message. */
    char longopt[400];
    memset(longopt, 'x', sizeof longopt - 1);
    longopt[0] = longopt[1] = '-';
    longopt[sizeof longopt - 1] = '\0';
    ck_assert_int_eq(PARSE(NULL, err, "prog", longopt), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "unknown option '--xxx"));
    /* A NULL or zero-length message buffer is allowed. */
    int argc = 2;
    char *argv[] = {"prog", "--bogus", NULL};
    ck_assert_int_eq(gale_options_parse(&spec, &argc, argv, NULL, 0), -EINVAL);
}
END_TEST

START_TEST(test_options_help_and_version_are_statuses)
{
    char err[256];
    int argc;
    ck_assert_int_eq(PARSE(&argc, err, "prog", "--port", "1", "--help", "--bogus"),
                     GALE_OPTIONS_HELP);
    ck_assert_int_eq(argc, 5); /* untouched */
    ck_assert_int_eq(PARSE(NULL, err, "prog", "-h"), GALE_OPTIONS_HELP);
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--version"), GALE_OPTIONS_VERSION);
    /* In order: an error before --help wins. */
    ck_assert_int_eq(PARSE(NULL, err, "prog", "--bogus", "--help"), -EINVAL);
}
END_TEST

static char *capture(void (*fn)(const gale_options *, FILE *))
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    fn(&spec, f);
    fclose(f);
    return text;
}

START_TEST(test_options_usage_lists_every_option_with_default)
{
    socket_path = "/run/x.sock";
    char *text = capture(gale_options_usage);
    ck_assert_msg(strncmp(text, "usage: prog [options] URL...\n\nA program that tests", 50) == 0,
                  "%s", text);
    ck_assert_ptr_nonnull(
        strstr(text, "  --port N                listen on port N (default 8879)\n"));
    ck_assert_ptr_nonnull(strstr(text, "--max-body BYTES"));
    ck_assert_ptr_nonnull(strstr(text, "largest body (default 1048576)"));
    ck_assert_ptr_nonnull(strstr(text, "seconds (default 20)"));
    ck_assert_ptr_nonnull(strstr(text, "listen on a unix socket (default /run/x.sock)"));
    ck_assert_ptr_nonnull(strstr(text, "  -q, --quiet, --no-access-log\n"));
    ck_assert_ptr_nonnull(strstr(text, "no access log\n")); /* a false bool shows no default */
    ck_assert_ptr_nonnull(strstr(text, "  -H, --header 'Name: value'"));
    ck_assert_ptr_nonnull(strstr(text, "  -h, --help"));
    ck_assert_ptr_nonnull(strstr(text, "  --version"));
    ck_assert_ptr_nonnull(strstr(text, "\nroutes:\n  GET /   hello\n"));
    free(text);
    text = capture(gale_options_version);
    char want[64];
    snprintf(want, sizeof want, "prog (gale %s)\n", gale_version_string());
    ck_assert_str_eq(text, want);
    free(text);
}
END_TEST

/* gale_options_parse_or_exit: returns on success, exits 0 for --help/--version, 2 on errors. */
static void parse_or_exit(char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    /* The usage goes to stdout: keep the test log clean. */
    ck_assert_ptr_nonnull(freopen("/dev/null", "w", stdout));
    ck_assert_ptr_nonnull(freopen("/dev/null", "w", stderr));
    gale_options_parse_or_exit(&spec, &argc, argv);
}

START_TEST(test_options_parse_or_exit_returns_on_success)
{
    char *argv[] = {"prog", "--port=7", "url", NULL};
    int argc = 3;
    gale_options_parse_or_exit(&spec, &argc, argv);
    ck_assert_int_eq(port, 7);
    ck_assert_int_eq(argc, 2);
}
END_TEST

START_TEST(test_options_parse_or_exit_help_exits_0)
{
    parse_or_exit((char *[]){"prog", "--help", NULL});
    ck_abort_msg("returned after --help");
}
END_TEST

START_TEST(test_options_parse_or_exit_version_exits_0)
{
    parse_or_exit((char *[]){"prog", "--version", NULL});
    ck_abort_msg("returned after --version");
}
END_TEST

START_TEST(test_options_parse_or_exit_error_exits_2)
{
    parse_or_exit((char *[]){"prog", "--port", "x", NULL});
    ck_abort_msg("returned after a bad value");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("options");
    TCase *tc = tcase_create("parse");
    tcase_add_checked_fixture(tc, reset, NULL);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_options_both_value_syntaxes);
    tcase_add_test(tc, test_options_bool_flag_alias_and_explicit_value);
    tcase_add_test(tc, test_options_short_options_and_repeats);
    tcase_add_test(tc, test_options_positional_kept_in_order);
    tcase_add_test(tc, test_options_errors_name_the_option);
    tcase_add_test(tc, test_options_help_and_version_are_statuses);
    suite_add_tcase(s, tc);
    TCase *tu = tcase_create("usage");
    tcase_add_checked_fixture(tu, reset, NULL);
    tcase_add_test(tu, test_options_usage_lists_every_option_with_default);
    suite_add_tcase(s, tu);
    TCase *te = tcase_create("exit");
    tcase_add_checked_fixture(te, reset, NULL);
    tcase_add_test(te, test_options_parse_or_exit_returns_on_success);
    tcase_add_exit_test(te, test_options_parse_or_exit_help_exits_0, 0);
    tcase_add_exit_test(te, test_options_parse_or_exit_version_exits_0, 0);
    tcase_add_exit_test(te, test_options_parse_or_exit_error_exits_2, 2);
    suite_add_tcase(s, te);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
