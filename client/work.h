/*
 * work.h - `joinq work`, the consumer pool (work.c): N worker processes
 * that take tasks from a queue and run a command once per task.
 */
#ifndef JQ_WORK_H
#define JQ_WORK_H

#include "cli.h"
#include "joinq.h"

/* For joinq's command list; `joinq work --help` tells the rest. */
#define WORK_USAGE "work [-j N] [OPTION]... [--] CMD [ARG]..."
extern const char work_help[];

/*
 * Runs `joinq work`.  argv[0] names the command for messages ("joinq
 * work"); the rest are its options, then CMD and its ARGs.  opt says where
 * the daemon is and how to talk to it; queue is the queue (NULL: the
 * daemon's "default").  Returns the exit status: 0 every CMD run exited 0,
 * 1 some run failed, 2 usage, 6 no daemon at start.
 */
int work_main(const struct jq_options *opt, const jq_tls *tls,
              const struct tls_flags *tls_flags, const char *queue, int argc,
              char **argv);

#endif
