/*-------------------------------------------------------------------------
 * http_endpoints.h
 *	  Plain HTTP on the ws port: /healthz, /metrics, static files.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_HTTP_ENDPOINTS_H
#define PRESENCE_HTTP_ENDPOINTS_H

struct lws;

extern int	http_endpoint_serve(struct lws *wsi, const char *uri);

#endif							/* PRESENCE_HTTP_ENDPOINTS_H */
