/*-------------------------------------------------------------------------
 * proxies.h
 *	  Reverse proxies the ws workers trust to say who the client is.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_PROXIES_H
#define PRESENCE_PROXIES_H

#include <stdbool.h>
#include <stddef.h>

extern bool proxy_is_trusted(const char *address);
extern bool proxy_client_address(const char *forwarded_for, char *client, size_t client_size);
extern bool proxy_list_valid(const char *list, const char **problem);

#endif							/* PRESENCE_PROXIES_H */
