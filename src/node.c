/*-------------------------------------------------------------------------
 * node.c
 *	  The node id: host name and PostgreSQL port, which tell apart the
 *	  servers that share one Redis (a primary and its standbys, or several
 *	  clusters on one host).  It prefixes connection ids, names the origin
 *	  of commands published to other nodes and of the maintenance sweep.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <limits.h>
#include <unistd.h>

#include "postmaster/postmaster.h"

#include "node.h"

/* The host name is cut here, so connection ids stay within their bounds. */
#define HOSTNAME_MAX 47

const char *
presence_node_id(void)
{
	static char node_id[HOSTNAME_MAX + 16];
	char		hostname[HOST_NAME_MAX + 1];

	if (node_id[0])
		return node_id;
	if (gethostname(hostname, sizeof(hostname)) != 0)
		strlcpy(hostname, "localhost", sizeof(hostname));
	hostname[HOSTNAME_MAX] = '\0';
	snprintf(node_id, sizeof(node_id), "%s-%d", hostname, PostPortNumber);
	return node_id;
}
