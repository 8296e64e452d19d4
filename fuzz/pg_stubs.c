/*-------------------------------------------------------------------------
 * pg_stubs.c
 *	  What the fuzz targets need of the PostgreSQL side, and nothing more.
 *
 * The parsers fuzzed here raise no PostgreSQL error and allocate with
 * malloc (they run inside libwebsockets and hiredis callbacks), so no
 * palloc or elog is stubbed: a target that came to need one would fail
 * to link, which is the point.  redis_layout.c reads three GUCs
 * (config.c); they get config.c's defaults, and a key prefix so that
 * channel names have one to match.
 *-------------------------------------------------------------------------
 */
char	   *presence_redis_url = "";
char	   *presence_redis_prefix = "fuzz:";
int			presence_presence_ttl_ms = 60000;
