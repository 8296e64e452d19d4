/*-------------------------------------------------------------------------
 * proxies.c
 *	  presence.trusted_proxies: the addresses (or CIDR ranges) of reverse
 *	  proxies in front of the ws workers, such as nginx or HAProxy
 *	  terminating TLS.
 *
 * A socket from a trusted proxy stands for many clients: the per-address
 * bound on newcomers (admission.c) does not apply to it, and the client's
 * address, as the activity log records it, is taken from the
 * X-Forwarded-For header the proxy appends to: the rightmost address in
 * it that is not itself a trusted proxy.  Anything to its left was
 * written by the client and proves nothing.  From any other peer the
 * header is ignored, so no client can choose the address it is logged
 * with.  Monitoring endpoints (presence.metrics_loopback_only) always go
 * by the peer itself.
 *
 * Plain C, run inside lws callbacks; the list is parsed where it is used
 * (a few entries, once per connection).
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <arpa/inet.h>

#include "proxies.h"

/* An address in binary, as inet_pton gives it. */
typedef struct IpAddress
{
	int			family;
	unsigned char bytes[16];
} IpAddress;

/* Parses an address; an IPv4 address mapped into IPv6 (::ffff:a.b.c.d) is taken as IPv4. */
static bool
parse_address(const char *text, IpAddress *address)
{
	static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};

	address->family = strchr(text, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(address->family, text, address->bytes) != 1)
		return false;
	if (address->family == AF_INET6 && memcmp(address->bytes, v4_mapped, sizeof(v4_mapped)) == 0)
	{
		memmove(address->bytes, address->bytes + 12, 4);
		address->family = AF_INET;
	}
	return true;
}

static int
address_bits(const IpAddress *address)
{
	return address->family == AF_INET ? 32 : 128;
}

/* Whether address is in the range "a.b.c.d[/n]" or "x::y[/n]" (false when the entry is malformed). */
static bool
in_range(const IpAddress *address, const char *entry, bool *malformed)
{
	char		text[64];
	char	   *slash;
	IpAddress	network;
	long		prefix;

	*malformed = true;
	if (strlcpy(text, entry, sizeof(text)) >= sizeof(text))
		return false;
	slash = strchr(text, '/');
	if (slash)
		*slash++ = '\0';
	if (!parse_address(text, &network))
		return false;
	prefix = address_bits(&network);
	if (slash)
	{
		char	   *end;

		prefix = strtol(slash, &end, 10);
		if (*slash == '\0' || *end != '\0' || prefix < 0 || prefix > address_bits(&network))
			return false;
	}
	*malformed = false;
	if (address == NULL || address->family != network.family)
		return false;
	for (int bit = 0; bit < prefix; bit += 8)
	{
		int			bits = Min(8, prefix - bit);
		unsigned char mask = (unsigned char) (0xFF << (8 - bits));

		if ((address->bytes[bit / 8] & mask) != (network.bytes[bit / 8] & mask))
			return false;
	}
	return true;
}

/*
 * Whether address is in one of the comma-separated entries of list.  *problem is set (and false returned) for the
 * first malformed entry.
 */
static bool
list_matches(const char *list, const IpAddress *address, const char **problem)
{
	char	   *copy = strdup(list ? list : "");
	char	   *save = NULL;
	bool		matched = false;

	*problem = copy ? NULL : "out of memory";
	for (char *entry = copy ? strtok_r(copy, ", \t", &save) : NULL; entry && !matched && !*problem;
		 entry = strtok_r(NULL, ", \t", &save))
	{
		bool		malformed;

		matched = in_range(address, entry, &malformed);
		if (malformed)
			*problem = "an entry is not an IP address or CIDR range";
	}
	free(copy);
	return matched && !*problem;
}

/* For the GUC's check hook: every entry an address or range. */
bool
proxy_list_valid(const char *list, const char **problem)
{
	(void) list_matches(list, NULL, problem);
	return *problem == NULL;
}

bool
proxy_is_trusted(const char *address)
{
	IpAddress	parsed;
	const char *problem;

	if (!presence_trusted_proxies || !presence_trusted_proxies[0] || !parse_address(address, &parsed))
		return false;
	return list_matches(presence_trusted_proxies, &parsed, &problem);
}

/*
 * The client behind a trusted proxy: the rightmost entry of the
 * X-Forwarded-For value that is a valid address and not a trusted proxy.
 * False when there is none (then the peer's address stands).
 */
bool
proxy_client_address(const char *forwarded_for, char *client, size_t client_size)
{
	const char *end = forwarded_for + strlen(forwarded_for);

	while (end > forwarded_for)
	{
		const char *start = end;
		const char *next_end;
		char		entry[64];
		IpAddress	parsed;
		size_t		len;

		while (start > forwarded_for && start[-1] != ',')
			start--;
		/* the next entry ends at this one's comma */
		next_end = start > forwarded_for ? start - 1 : forwarded_for;
		while (start < end && (*start == ' ' || *start == '\t'))
			start++;
		len = end - start;
		while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t'))
			len--;
		end = next_end;
		if (len == 0 || len >= sizeof(entry))
			return false;
		memcpy(entry, start, len);
		entry[len] = '\0';
		if (!parse_address(entry, &parsed))
			return false;
		if (!proxy_is_trusted(entry))
		{
			strlcpy(client, entry, client_size);
			return true;
		}
	}
	return false;
}
