/*
 * joinq.c - the joinq command line: joinq's own options (where the daemon
 * is, the queue, the token), the table of commands with their options and
 * help, and main, which parses a command's options and runs it.  The
 * commands are in put.c, join.c, commands.c, work.c and bench.c; what
 * they share is in cli.c.  Every network call goes through libjoinq
 * (joinq.h).
 *
 * Exit status (also in --help):
 *   0  success
 *   1  any other error: an error reply (unknown_task, bad_request, ...)
 *      or a request that failed
 *   2  usage error: a bad option, number or task id, or an item that is
 *      not valid JSON (--json) or not valid UTF-8
 *   3  empty: get found nothing
 *   4  full: put could not enqueue
 *   5  timeout: join timed out
 *   6  cannot connect, connection lost, or no reply in time
 *   7  conflict: declare found other settings, or delete a queue with
 *      unfinished tasks
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "commands.h"
#include "joinq.h"
#include "token.h"
#include "work.h"

struct command {
	const char *name;
	command_fn *run;
	unsigned options;           /* OPT_* it accepts */
	int min_args, max_args;     /* max_args < 0: any number */
	const char *usage;
	const char *help;
};

static const char *const exit_status_help =
	"Exit status:\n"
	"  0  success\n"
	"  1  any other error: an error reply (unknown_task, bad_request, ...)\n"
	"     or a request that failed\n"
	"  2  usage error: bad option, number or task id; an item that is not\n"
	"     valid JSON (--json) or not valid UTF-8\n"
	"  3  empty: get found nothing\n"
	"  4  full: put could not enqueue\n"
	"  5  timeout: join timed out\n"
	"  6  cannot connect, connection lost, or no reply in time\n"
	"  7  conflict: declare found other settings, or delete a queue with\n"
	"     unfinished tasks\n";

/* ---- the port, the connection, the token --------------------------------- */

static bool parse_port(const char *text)
{
	uint64_t v;
	return strlen(text) <= 5 && parse_count(text, 1, 65535, &v);
}

jq_client *open_client(const struct session *s, int *status)
{
	struct jq_error err;
	jq_client *c = jq_connect_tls(&s->opt, s->tls, &err);
	if (!c)
		*status = report(NULL, &err);
	return c;
}

/* The token in path (token.h), read as joinqd reads its own. */
static int read_token(const struct session *s, const char *path,
                      char **token)
{
	char err[512];
	size_t len;
	int rc = token_read("the token file", path, token, &len, err, sizeof err);
	if (rc == -2)
		return usage_error(s->cmd, "%s", err);
	if (rc) {
		fprintf(stderr, "joinq: %s\n", err);
		return EXIT_ERROR;
	}
	return EXIT_OK;
}

/* ---- the command line --------------------------------------------------- */

/* work: the pool is work.c's.  It reads its own options: CMD's options
 * after them must not be taken for joinq's. */
static int cmd_work(struct session *s, const struct cmd_options *o,
                    int argc, char **argv)
{
	(void)o;
	return work_main(&s->opt, s->tls, &s->tls_flags, s->queue, argc, argv);
}

/* bench: the load generator is bench.c's, with options of its own (-n,
 * -d, -P) that the other commands do not share. */
static int cmd_bench(struct session *s, const struct cmd_options *o,
                     int argc, char **argv)
{
	(void)o;
	return bench_main(&s->opt, &s->tls_flags, argc, argv);
}

static const struct command commands[] = {
	{ "put", cmd_put, OPT_JSON | OPT_NOWAIT | OPT_TIMEOUT | OPT_SHOW_TASK |
	  OPT_JOIN | OPT_JOIN_TIMEOUT | OPT_PROGRESS, 0, -1,
	  "put [--json] [--nowait] [--timeout S] [--show-task]\n"
	  "      [--join [--join-timeout S] [--progress]] [ITEM...]",
	  "Put items on the queue.  Each ITEM is a string item; with --json each\n"
	  "is a JSON value instead.  With no ITEM, each line of stdin is one item\n"
	  "(the LF and a CR before it removed; an empty line is an empty string);\n"
	  "many are kept in flight at once, so big inputs go fast.  Prints\n"
	  "nothing unless --show-task.  On the first error reply nothing more is\n"
	  "sent and joinq says which line or item failed; items sent before it\n"
	  "stay queued.  Put '--' before an ITEM that starts with '-'.\n"
	  "\n"
	  "With --join, once every item is in, wait as 'joinq join' does until\n"
	  "every task on the queue is done, these and any others; exits 5 if the\n"
	  "join times out.  --timeout and --nowait are for the puts only; the join\n"
	  "waits for ever unless --join-timeout.\n"
	  "\n"
	  "      --json         items are JSON values (checked before sending)\n"
	  "      --nowait       fail with 'full' at once if the queue is full\n"
	  "      --timeout S    wait at most S seconds for room (default: no limit)\n"
	  "      --show-task    print each task id, one a line, in input order\n"
	  "      --join         then wait until the queue's tasks are all done\n"
	  "      --join-timeout S  wait at most S seconds for that\n"
	  "      --progress     show the join's progress (see join --help)\n" },
	{ "get", cmd_get, OPT_NOWAIT | OPT_TIMEOUT | OPT_LEASE | OPT_SHOW_TASK,
	  0, 0, "get [--nowait] [--timeout S] [--lease S] [--show-task]",
	  "Take the item at the head of the queue and print it, then a newline:\n"
	  "a string item as its raw text, any other item as compact JSON.  The\n"
	  "task id goes to stderr as 'task N'; with --show-task stdout gets\n"
	  "'N<TAB>ITEM' instead (for IFS=$'\\t' read -r task item) and stderr\n"
	  "nothing.\n"
	  "\n"
	  "Without --lease, a get over TCP holds its task only while joinq's\n"
	  "connection lives: when joinq exits the task goes back to the queue.\n"
	  "From a script, take it with a lease and finish it yourself:\n"
	  "    out=$(joinq get --lease 60 --show-task) || exit\n"
	  "    IFS=$'\\t' read -r task item <<<\"$out\"\n"
	  "    ... work on \"$item\" ...\n"
	  "    joinq task_done \"$task\"\n"
	  "(Over UDP every get has a lease: --lease, or the daemon's udp_lease.)\n"
	  "\n"
	  "      --nowait       fail with 'empty' at once if the queue is empty\n"
	  "      --timeout S    wait at most S seconds for an item (default: no limit)\n"
	  "      --lease S      keep the task S seconds (> 0) after joinq exits\n"
	  "      --show-task    print 'TASK<TAB>ITEM' on stdout\n" },
	{ "task_done", cmd_task_done, OPT_VERBOSE, 1, 1, "task_done [-v] TASK",
	  "Mark delivered task TASK finished.  Prints nothing unless -v.\n"
	  "\n"
	  "  -v, --verbose      print the queue's unfinished count after it\n" },
	{ "release", cmd_release, OPT_DELAY, 1, 1, "release [--delay S] TASK",
	  "Give delivered task TASK back undone: it returns to the head of its\n"
	  "queue, after S seconds with --delay.\n"
	  "\n"
	  "      --delay S      hold the task back S seconds first\n" },
	{ "join", cmd_join, OPT_NOWAIT | OPT_TIMEOUT | OPT_PROGRESS, 0, 0,
	  "join [--nowait] [--timeout S] [--progress]",
	  "Wait until every task put on the queue is done (task_done).\n"
	  "Exits 5 (timeout) if tasks are still unfinished when the wait ends.\n"
	  "\n"
	  "--progress watches the queue on a second connection meanwhile.  On a\n"
	  "terminal, stderr shows a bar redrawn 4 times a second and wiped at\n"
	  "the end:\n"
	  "    [#########.........] 4,321 unfinished, 1,234 done, 250/s, ETA 17s\n"
	  "'done' is how far the unfinished count has come down from the largest\n"
	  "seen (the bar's 100%); the rate is taken over the last 5 seconds.\n"
	  "When stderr is not a terminal it gets a plain line at the start,\n"
	  "every 5 seconds, and when the join returns:\n"
	  "    joinq: join QUEUE: 4321 unfinished, 1234 done, 250/s, ETA 17s\n"
	  "    joinq: join QUEUE: 0 unfinished, 5555 done, joined after 22s\n"
	  "\n"
	  "      --nowait       answer at once\n"
	  "      --timeout S    wait at most S seconds (default: forever)\n"
	  "      --progress     show progress on stderr\n" },
	{ "qsize", cmd_qsize, OPT_JSON, 0, 0, "qsize [--json]",
	  "Print the queue's figures: queued items, maxsize (0: unbounded),\n"
	  "unfinished tasks, tasks in flight, delayed tasks, and the tasks it\n"
	  "sent to its dead-letter queue (dead_lettered).\n"
	  "\n"
	  "      --json         print them as one JSON object\n" },
	{ "empty", cmd_empty, 0, 0, 0, "empty",
	  "Print true if the queue holds no queued item, else false.\n" },
	{ "full", cmd_full, 0, 0, 0, "full",
	  "Print true if the queue holds maxsize items, else false.\n" },
	{ "stats", cmd_stats, OPT_JSON, 0, 0, "stats [--json]",
	  "Print the daemon's version, uptime and connections, then one row of\n"
	  "figures per queue.\n"
	  "\n"
	  "      --json         print the daemon's reply as it is\n" },
	{ "ping", cmd_ping, 0, 0, 0, "ping",
	  "Ask the daemon for its version, and time the round trip.\n" },
	{ "declare", cmd_declare, OPT_SETTINGS | OPT_JSON, 0, 0,
	  "declare [--maxsize N] [--max-deliveries N] [--dead-letter NAME]\n"
	  "      [--json]",
	  "Make the queue with the settings given, as Python's\n"
	  "JoinableQueue(maxsize=N) does; the settings not given come from the\n"
	  "daemon's configuration.  If the queue exists, each setting given must\n"
	  "be the queue's own, and a setting the daemon's configuration file\n"
	  "gives the queue cannot be changed: else joinq exits 7 (conflict) and\n"
	  "nothing changes.  Prints 'created' (or 'exists') and the queue's\n"
	  "settings: maxsize, max_deliveries and dead_letter ('-': tasks past\n"
	  "max_deliveries are dropped).  The settings last as long as the queue,\n"
	  "across restarts of a daemon with a journal.\n"
	  "\n"
	  "      --maxsize N    queued items at which put waits (0: unbounded)\n"
	  "      --max-deliveries N  deliveries after which a task goes to the\n"
	  "                     dead-letter queue (0: no limit)\n"
	  "      --dead-letter NAME  the dead-letter queue (default QUEUE.dead)\n"
	  "      --json         print the settings as one JSON object\n" },
	{ "purge", cmd_purge, 0, 0, 0, "purge",
	  "Finish every queued task of the queue at once, unprocessed (not\n"
	  "those in flight or delayed), and print how many: 'purged N'.\n"
	  "Blocked puts and joins go on as after gets and task_dones.\n" },
	{ "delete", cmd_delete, 0, 0, 0, "delete",
	  "Remove the queue and its settings.  Only a queue with no unfinished\n"
	  "task can go: else joinq exits 7 (conflict) and nothing changes (purge,\n"
	  "then join, first).  Prints 'deleted', or says there was no such\n"
	  "queue (not an error).  Getters waiting on it get 'empty'.\n" },
	{ "work", cmd_work, OPT_OWN_ARGS, 0, -1, WORK_USAGE, work_help },
	{ "bench", cmd_bench, OPT_OWN_ARGS, 0, -1, BENCH_USAGE, bench_help },
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void print_help(void)
{
	printf("usage: joinq [OPTION]... COMMAND [ARG]...\n"
	       "Use the queues of a joinqd daemon, like Python's JoinableQueue.\n"
	       "\n"
	       "Options (before the command):\n"
	       "  -H, --host HOST        daemon host ($JOINQ_HOST, else %s), or a\n"
	       "                         list a:7477,b:7477 tried in turn (TCP)\n"
	       "  -p, --port PORT        daemon port ($JOINQ_PORT, else %s)\n"
	       "  -u, --udp              talk UDP instead of TCP\n"
	       "      --tls              TCP in TLS ($JOINQ_TLS=1); the port then\n"
	       "                         defaults to %s, the daemon's TLS port\n"
	       "      --cacert FILE      trust the CAs in FILE (PEM), not the\n"
	       "                         system's ($JOINQ_CACERT)\n"
	       "      --cert FILE        present this client certificate (PEM), for\n"
	       "                         a daemon that asks one ($JOINQ_CERT)\n"
	       "      --key FILE         its key (PEM; $JOINQ_KEY); --cert and --key\n"
	       "                         go together\n"
	       "      --tls-server-name NAME  the name the daemon's certificate must\n"
	       "                         be for (default: the host connected to;\n"
	       "                         $JOINQ_TLS_SERVER_NAME)\n"
	       "      --tls-insecure-any-name  accept the certificate whatever name it\n"
	       "                         is for: the CA is still checked, but anyone\n"
	       "                         with a certificate from it can pose as the\n"
	       "                         daemon ($JOINQ_TLS_INSECURE_ANY_NAME=1)\n"
	       "  -q, --queue NAME       the queue ($JOINQ_QUEUE, else default)\n"
	       "      --token-file FILE  the token is FILE's first line, blanks\n"
	       "                         around it trimmed (default $JOINQ_TOKEN)\n"
	       "  -h, --help             show this help and exit\n"
	       "  -V, --version          show the version and exit\n"
	       "\n"
	       "Commands:\n", JQ_DEFAULT_HOST, JQ_DEFAULT_PORT,
	       JQ_DEFAULT_TLS_PORT);
	for (size_t i = 0; i < NCOMMANDS; i++)
		printf("  %s\n", commands[i].usage);
	printf("\n'joinq COMMAND --help' tells more of each.\n\n%s",
	       exit_status_help);
}

static void print_command_help(const struct command *cmd)
{
	printf("usage: joinq [OPTION]... %s\n%s\n%s", cmd->usage, cmd->help,
	       exit_status_help);
}

/* Long options with no letter of their own. */
enum {
	LONG_JOIN = 300, LONG_JOIN_TIMEOUT, LONG_PROGRESS, LONG_MAXSIZE,
	LONG_MAX_DELIVERIES, LONG_DEAD_LETTER,
};

static const struct option cmd_longopts[] = {
	{ "json", no_argument, NULL, 'j' },
	{ "nowait", no_argument, NULL, 'n' },
	{ "timeout", required_argument, NULL, 't' },
	{ "show-task", no_argument, NULL, 's' },
	{ "lease", required_argument, NULL, 'l' },
	{ "delay", required_argument, NULL, 'd' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "join", no_argument, NULL, LONG_JOIN },
	{ "join-timeout", required_argument, NULL, LONG_JOIN_TIMEOUT },
	{ "progress", no_argument, NULL, LONG_PROGRESS },
	{ "maxsize", required_argument, NULL, LONG_MAXSIZE },
	{ "max-deliveries", required_argument, NULL, LONG_MAX_DELIVERIES },
	{ "dead-letter", required_argument, NULL, LONG_DEAD_LETTER },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static const char *long_name(int ch)
{
	for (const struct option *lo = cmd_longopts; lo->name; lo++)
		if (lo->val == ch)
			return lo->name;
	return "?";
}

/* Parses the command's options; *done says the run is over (--help or a
 * usage error) with the status returned. */
static int parse_command(struct session *s, const struct command *cmd,
                         int argc, char **argv, struct cmd_options *o,
                         bool *done)
{
	int ch;

	*done = true;
	memset(o, 0, sizeof *o);
	o->wait.block = true;
	o->wait.timeout = -1;
	o->join_timeout = -1;
	optind = 0;   /* GNU getopt: start afresh on this argv */
	while ((ch = getopt_long(argc, argv, "hv", cmd_longopts, NULL)) != -1) {
		unsigned flag;
		switch (ch) {
		case 'h':
			print_command_help(cmd);
			return EXIT_OK;
		case 'j': flag = OPT_JSON; break;
		case 'n': flag = OPT_NOWAIT; break;
		case 't': flag = OPT_TIMEOUT; break;
		case 's': flag = OPT_SHOW_TASK; break;
		case 'l': flag = OPT_LEASE; break;
		case 'd': flag = OPT_DELAY; break;
		case 'v': flag = OPT_VERBOSE; break;
		case LONG_JOIN: flag = OPT_JOIN; break;
		case LONG_JOIN_TIMEOUT: flag = OPT_JOIN_TIMEOUT; break;
		case LONG_PROGRESS: flag = OPT_PROGRESS; break;
		case LONG_MAXSIZE:
		case LONG_MAX_DELIVERIES:
		case LONG_DEAD_LETTER: flag = OPT_SETTINGS; break;
		default:
			/* getopt has said what is wrong */
			fprintf(stderr, "Try 'joinq %s --help'.\n", cmd->name);
			return EXIT_USAGE;
		}
		if (!(cmd->options & flag))
			return usage_error(s->cmd, "unknown option --%s",
			                   long_name(ch));
		switch (ch) {
		case 'j': o->json = true; break;
		case 'n': o->wait.block = false; break;
		case 's': o->show_task = true; break;
		case 'v': o->verbose = true; break;
		case LONG_JOIN: o->join = true; break;
		case LONG_PROGRESS: o->progress = true; break;
		case LONG_JOIN_TIMEOUT:
			if (!parse_seconds(optarg, &o->join_timeout))
				return usage_error(s->cmd, "--join-timeout wants "
				                   "seconds >= 0, not '%s'", optarg);
			break;
		case 't':
			if (!parse_seconds(optarg, &o->wait.timeout))
				return usage_error(s->cmd, "--timeout wants seconds "
				                   ">= 0, not '%s'", optarg);
			break;
		case 'l':
			if (!parse_seconds(optarg, &o->lease) || o->lease == 0)
				return usage_error(s->cmd, "--lease wants seconds > "
				                   "0, not '%s'", optarg);
			break;
		case 'd':
			if (!parse_seconds(optarg, &o->delay))
				return usage_error(s->cmd, "--delay wants seconds "
				                   ">= 0, not '%s'", optarg);
			break;
		case LONG_MAXSIZE:
			if (!parse_count(optarg, 0, INT64_MAX,
			                 &o->settings.maxsize))
				return usage_error(s->cmd, "--maxsize wants a whole "
				                   "number >= 0, not '%s'", optarg);
			o->settings.has_maxsize = true;
			break;
		case LONG_MAX_DELIVERIES: {
			uint64_t v;
			if (!parse_count(optarg, 0, UINT32_MAX, &v))
				return usage_error(s->cmd, "--max-deliveries wants a "
				                   "whole number from 0 to 4294967295, "
				                   "not '%s'", optarg);
			o->settings.max_deliveries = (uint32_t)v;
			o->settings.has_max_deliveries = true;
			break;
		}
		case LONG_DEAD_LETTER:
			/* The daemon judges the name (bad_queue). */
			o->settings.dead_letter = optarg;
			break;
		}
	}
	int nargs = argc - optind;
	if (nargs < cmd->min_args)
		return usage_error(s->cmd, "missing argument: joinq %s",
		                   cmd->usage);
	if (cmd->max_args >= 0 && nargs > cmd->max_args)
		return usage_error(s->cmd, "unexpected argument '%s'",
		                   argv[optind + cmd->max_args]);
	*done = false;
	return EXIT_OK;
}

enum {
	LONG_TOKEN_FILE = 256, LONG_TLS, LONG_CACERT, LONG_CERT, LONG_KEY,
	LONG_TLS_SERVER_NAME, LONG_TLS_ANY_NAME,
};

static const struct option global_longopts[] = {
	{ "host", required_argument, NULL, 'H' },
	{ "port", required_argument, NULL, 'p' },
	{ "udp", no_argument, NULL, 'u' },
	{ "queue", required_argument, NULL, 'q' },
	{ "token-file", required_argument, NULL, LONG_TOKEN_FILE },
	{ "tls", no_argument, NULL, LONG_TLS },
	{ "cacert", required_argument, NULL, LONG_CACERT },
	{ "cert", required_argument, NULL, LONG_CERT },
	{ "key", required_argument, NULL, LONG_KEY },
	{ "tls-server-name", required_argument, NULL, LONG_TLS_SERVER_NAME },
	{ "tls-insecure-any-name", no_argument, NULL, LONG_TLS_ANY_NAME },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

/* A variable of the environment that is set and not empty. */
static const char *env_value(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

/* An environment switch: on unless unset, empty or 0. */
static bool env_on(const char *name)
{
	const char *v = env_value(name);
	return v && strcmp(v, "0") != 0;
}

/* The TLS settings of f as libjoinq's jq_tls, in s->tls; the exit status
 * of a failure, reported. */
static int make_tls(struct session *s)
{
	const struct tls_flags *f = &s->tls_flags;
	struct jq_error err;
	jq_tls *t;

	if (!f->on)
		return EXIT_OK;
	if (s->opt.transport == JQ_UDP)
		return usage_error(s->cmd, "-u (UDP) cannot carry TLS: drop -u, "
		                   "or --tls and $JOINQ_TLS");
	if (!f->cert != !f->key)
		return usage_error(s->cmd, "%s without %s: a client certificate "
		                   "needs its key", f->cert ? "--cert" : "--key",
		                   f->cert ? "--key" : "--cert");
	if (!(t = jq_tls_new(&err)))
		return report(NULL, &err);
	if ((f->cacert && jq_tls_set_ca_file(t, f->cacert, &err)) ||
	    (f->cert && jq_tls_set_cert(t, f->cert, f->key, &err)) ||
	    (f->server_name && jq_tls_set_server_name(t, f->server_name,
	                                              &err))) {
		jq_tls_free(t);
		return report(NULL, &err);
	}
	if (f->any_name)
		jq_tls_insecure_any_name(t);
	s->tls = t;
	return EXIT_OK;
}

static int finish_output(int status)
{
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "joinq: cannot write to stdout: %s\n",
		        strerror(errno));
		return status ? status : EXIT_ERROR;
	}
	return status;
}

int main(int argc, char **argv)
{
	struct session s = { .opt = JQ_OPTIONS_INIT };
	const char *token_file = NULL, *env;
	char *token = NULL;
	char label[64];
	int ch, status;

	argv[0] = (char *)"joinq";   /* getopt's messages name it so */
	s.opt.host = getenv("JOINQ_HOST");
	s.opt.port = getenv("JOINQ_PORT");
	s.queue = getenv("JOINQ_QUEUE");
	if ((env = getenv("JOINQ_TOKEN")) && *env)
		s.opt.token = env;
	if (s.queue && !*s.queue)
		s.queue = NULL;
	struct tls_flags *tf = &s.tls_flags;
	tf->on = env_on("JOINQ_TLS");
	tf->cacert = env_value("JOINQ_CACERT");
	tf->cert = env_value("JOINQ_CERT");
	tf->key = env_value("JOINQ_KEY");
	tf->server_name = env_value("JOINQ_TLS_SERVER_NAME");
	tf->any_name = env_on("JOINQ_TLS_INSECURE_ANY_NAME");
	const char *tls_option = NULL;   /* the last TLS option given */
	bool tls_flag = false;

	while ((ch = getopt_long(argc, argv, "+H:p:uq:hV", global_longopts,
	                         NULL)) != -1) {
		switch (ch) {
		case 'H': s.opt.host = optarg; break;
		case 'p': s.opt.port = optarg; break;
		case 'u': s.opt.transport = JQ_UDP; break;
		case 'q': s.queue = optarg; break;
		case LONG_TOKEN_FILE: token_file = optarg; break;
		case LONG_TLS: tls_flag = true; break;
		case LONG_CACERT: tf->cacert = optarg; tls_option = "cacert"; break;
		case LONG_CERT: tf->cert = optarg; tls_option = "cert"; break;
		case LONG_KEY: tf->key = optarg; tls_option = "key"; break;
		case LONG_TLS_SERVER_NAME:
			tf->server_name = optarg;
			tls_option = "tls-server-name";
			break;
		case LONG_TLS_ANY_NAME:
			tf->any_name = true;
			tls_option = "tls-insecure-any-name";
			break;
		case 'h':
			print_help();
			return finish_output(EXIT_OK);
		case 'V':
			printf("joinq %s\n", PACKAGE_VERSION);
			return finish_output(EXIT_OK);
		default:
			fprintf(stderr, "Try 'joinq --help'.\n");
			return EXIT_USAGE;
		}
	}
	if (s.opt.host && !*s.opt.host)
		s.opt.host = NULL;
	if (s.opt.port && *s.opt.port && !parse_port(s.opt.port))
		return usage_error(s.cmd, "the port must be a number from 1 to "
		                   "65535, not '%s'", s.opt.port);
	if (s.opt.port && !*s.opt.port)
		s.opt.port = NULL;
	if (optind >= argc)
		return usage_error(s.cmd, "no command given");
	tf->on = tf->on || tls_flag;
	if (tls_option && !tf->on)
		return usage_error(s.cmd, "--%s is for TLS: add --tls",
		                   tls_option);

	const struct command *cmd = NULL;
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (!strcmp(argv[optind], commands[i].name))
			cmd = &commands[i];
	if (!cmd)
		return usage_error(s.cmd, "unknown command '%s'", argv[optind]);
	s.cmd = cmd->name;

	/* The command's argv starts at its name; getopt's messages then
	 * say "joinq put: ...". */
	int cargc = argc - optind;
	char **cargv = argv + optind;
	snprintf(label, sizeof label, "joinq %s", cmd->name);
	cargv[0] = label;
	struct cmd_options o;
	bool done;
	if (cmd->options & OPT_OWN_ARGS) {
		/* It gets its argv whole, its name first. */
		memset(&o, 0, sizeof o);
		status = EXIT_OK;
		done = false;
		optind = 0;
	} else {
		status = parse_command(&s, cmd, cargc, cargv, &o, &done);
	}
	if (done)
		return finish_output(status);

	if (token_file) {
		if ((status = read_token(&s, token_file, &token)))
			return status;
		s.opt.token = token;
	}
	if ((status = make_tls(&s))) {
		free(token);
		return status;
	}
	status = cmd->run(&s, &o, cargc - optind, cargv + optind);
	jq_tls_free(s.tls);
	free(token);
	return finish_output(status);
}

