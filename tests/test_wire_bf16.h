/* test_wire_bf16.h: the bfloat16 conversion's test group, which
 * test_wire's main runs after its own. */
#ifndef FSPS_TEST_WIRE_BF16_H
#define FSPS_TEST_WIRE_BF16_H

/* wire_bf16_tests runs test_wire_bf16.c's group; returns how many of its
 * tests failed. */
int wire_bf16_tests(void);

#endif
