/*
 * jqtls.c - libjoinq's TLS settings, the public jq_tls_* calls (joinq.h):
 * thin wrappers over tlsc.c's configuration that report as every libjoinq
 * call does.  Connecting with them is connection.c's (jq_connect_tls).
 */
#include <stdlib.h>

#include "joinq.h"
#include "jqclient.h"
#include "tlsc.h"

jq_tls *jq_tls_new(struct jq_error *err)
{
	struct jq_error spare;
	char why[TLSC_WHY];
	jq_tls *t = malloc(sizeof *t);

	if (!err)
		err = &spare;
	if (!t) {
		jqc_out_of_memory(err, "for the TLS settings");
		return NULL;
	}
	if (tlsc_config_init(t, why, sizeof why)) {
		jqc_fail(err, JQ_ERR_SYSTEM, "%s", why);
		free(t);
		return NULL;
	}
	jqc_ok(err);
	return t;
}

/* Reports the result of one of tlsc.c's setters. */
static int setting(int failed, const char *why, struct jq_error *err)
{
	struct jq_error spare;
	if (!err)
		err = &spare;
	if (failed)
		return jqc_fail(err, JQ_ERR_ARGUMENT, "%s", why);
	return jqc_ok(err);
}

int jq_tls_set_ca_file(jq_tls *t, const char *path, struct jq_error *err)
{
	char why[TLSC_WHY];
	return setting(tlsc_config_ca_file(t, path, why, sizeof why), why, err);
}

int jq_tls_set_cert(jq_tls *t, const char *cert_file, const char *key_file,
                    struct jq_error *err)
{
	char why[TLSC_WHY];
	return setting(tlsc_config_cert(t, cert_file, key_file, why, sizeof why),
	               why, err);
}

int jq_tls_set_server_name(jq_tls *t, const char *name, struct jq_error *err)
{
	char why[TLSC_WHY];
	if (tlsc_config_server_name(t, name, why, sizeof why)) {
		struct jq_error spare;
		return jqc_out_of_memory(err ? err : &spare, "for the server name");
	}
	return setting(0, why, err);
}

void jq_tls_insecure_any_name(jq_tls *t)
{
	t->any_name = true;
}

void jq_tls_free(jq_tls *t)
{
	if (!t)
		return;
	tlsc_config_free(t);
	free(t);
}
