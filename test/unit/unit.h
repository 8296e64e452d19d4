/*-------------------------------------------------------------------------
 * unit.h
 *	  The whole unit-test "framework": checks that record a failure with
 *	  file:line and let the case go on (so its clean-up still runs and the
 *	  leak check stays meaningful), and a runner that prints one line per
 *	  case, TAP style:
 *
 *		ok - name
 *		not ok - name
 *		#   test_x.c:42: count == 2: 1 != 2
 *
 *	  A case is a void function; UNIT_RUN(fn) runs it between the optional
 *	  unit_setup / unit_teardown hooks.  Arguments name cases to run (all
 *	  when none).  unit_main_end() prints the summary and gives the exit
 *	  status.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_UNIT_H
#define PRESENCE_UNIT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int	unit_case_failures;
static int	unit_cases_run;
static int	unit_cases_failed;
static int	unit_argc;
static char **unit_argv;
static void (*unit_setup) (void);
static void (*unit_teardown) (void);

static void unit_fail(const char *file, int line, const char *format, ...)
			__attribute__((format(__printf__, 3, 4)));

static void
unit_fail(const char *file, int line, const char *format, ...)
{
	va_list		args;
	const char *base = strrchr(file, '/');

	fprintf(stdout, "#   %s:%d: ", base ? base + 1 : file, line);
	va_start(args, format);
	vfprintf(stdout, format, args);
	va_end(args);
	fputc('\n', stdout);
	fflush(stdout);
	unit_case_failures++;
}

#define CHECK(cond) \
	do { \
		if (!(cond)) \
			unit_fail(__FILE__, __LINE__, "%s", #cond); \
	} while (0)

#define CHECK_EQ_INT(actual, expected) \
	do { \
		long long	unit_a_ = (long long) (actual); \
		long long	unit_e_ = (long long) (expected); \
		if (unit_a_ != unit_e_) \
			unit_fail(__FILE__, __LINE__, "%s == %s: %lld, expected %lld", \
					  #actual, #expected, unit_a_, unit_e_); \
	} while (0)

/* Strings compared with strcmp; NULL equals only NULL. */
#define CHECK_STR(actual, expected) \
	do { \
		const char *unit_a_ = (actual); \
		const char *unit_e_ = (expected); \
		if ((unit_a_ == NULL) != (unit_e_ == NULL) || \
			(unit_a_ && strcmp(unit_a_, unit_e_) != 0)) \
			unit_fail(__FILE__, __LINE__, "%s == %s: \"%s\", expected \"%s\"", \
					  #actual, #expected, unit_a_ ? unit_a_ : "(null)", \
					  unit_e_ ? unit_e_ : "(null)"); \
	} while (0)

/* Ends the case at once when cond is false (for pointers the rest needs). */
#define REQUIRE(cond) \
	do { \
		if (!(cond)) \
		{ \
			unit_fail(__FILE__, __LINE__, "required: %s", #cond); \
			return; \
		} \
	} while (0)

static bool
unit_selected(const char *name)
{
	if (unit_argc <= 1)
		return true;
	for (int i = 1; i < unit_argc; i++)
		if (strcmp(unit_argv[i], name) == 0)
			return true;
	return false;
}

static void
unit_run_case(const char *name, void (*fn) (void))
{
	if (!unit_selected(name))
		return;
	unit_case_failures = 0;
	if (unit_setup)
		unit_setup();
	fn();
	if (unit_teardown)
		unit_teardown();
	unit_cases_run++;
	if (unit_case_failures)
		unit_cases_failed++;
	printf("%s - %s\n", unit_case_failures ? "not ok" : "ok", name);
	fflush(stdout);
}

#define UNIT_MAIN_BEGIN(argc, argv) (unit_argc = (argc), unit_argv = (argv))
#define UNIT_RUN(fn) unit_run_case(#fn, fn)

static int
unit_main_end(const char *binary)
{
	printf("# %s: %d cases, %d failed\n", binary, unit_cases_run, unit_cases_failed);
	if (unit_argc > 1 && unit_cases_run == 0)
	{
		printf("not ok - %s: no case is named so\n", binary);
		unit_cases_failed++;
	}
	fflush(stdout);
	return unit_cases_failed ? 1 : 0;
}

#endif							/* PRESENCE_UNIT_H */
