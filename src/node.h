/*-------------------------------------------------------------------------
 * node.h
 *	  Which PostgreSQL server this is, as presence names it to the others.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_NODE_H
#define PRESENCE_NODE_H

extern const char *presence_node_id(void);

#endif							/* PRESENCE_NODE_H */
