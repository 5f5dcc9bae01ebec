/* check_main.c - runs every unit-test suite. */
#include <stdlib.h>

#include "check_suites.h"

int
main(void)
{
	SRunner *runner = srunner_create(config_suite());
	int failed;

	srunner_add_suite(runner, log_suite());
	srunner_add_suite(runner, line_suite());
	srunner_add_suite(runner, command_suite());
	srunner_add_suite(runner, addr_suite());
	srunner_add_suite(runner, wire_suite());
	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
