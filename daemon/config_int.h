/*
 * config_int.h - what the three files of joinqd's settings share: config.c
 * (defaults, the config file, the value of every setting), flags.c (the
 * command line) and confaddr.c (the address-shaped values).  Nothing else
 * includes it: the rest of joinqd knows its settings by config.h alone.
 */
#ifndef JQ_CONFIG_INT_H
#define JQ_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Bytes of a bad value an error message shows, so that a long one (a list
 * of URLs) leaves room for what is wrong with it. */
#define VALUE_SHOWN 100

/* config.c: one named setting, from the file or a flag (its key the file's
 * name for it); [queue NAME] settings.  NULL, or what is wrong. */
const char *cfg_set_main(struct config *c, const char *key, const char *val);
const char *cfg_set_queue(struct config *c, const char *name,
                          const char *key, const char *val);

/* flags.c: -c FILE into c->file; then the other flags over the settings,
 * 0 or -1 with why in err. */
void cfg_file_flag(struct config *c, int argc, char **argv);
int cfg_apply_flags(struct config *c, int argc, char **argv, char *err,
                    size_t errlen);

/* confaddr.c: the bind list (set_binds: -1 for an empty list), udp_allow
 * and nats_servers (false, c unchanged, for a bad list), HOST[:PORT], and
 * advertise's default once the binds and the port are known. */
void cfg_free_binds(struct config *c);
void cfg_add_bind(struct config *c, const char *addr, size_t len);
int cfg_set_binds(struct config *c, const char *list);
bool cfg_set_udp_allow(struct config *c, const char *list);
bool cfg_set_nats_servers(struct config *c, const char *list);
bool cfg_valid_host_port(const char *s, size_t len, bool need_port);
void cfg_default_advertise(struct config *c);

#endif
