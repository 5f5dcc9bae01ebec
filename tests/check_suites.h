/* check_suites.h - every unit-test suite, one per module. */
#ifndef ECHOCHATD_CHECK_SUITES_H
#define ECHOCHATD_CHECK_SUITES_H

#include <check.h>

Suite *config_suite(void);
Suite *log_suite(void);
Suite *line_suite(void);
Suite *command_suite(void);
Suite *addr_suite(void);
Suite *wire_suite(void);

#endif
