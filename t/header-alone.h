/*
 * t/header-alone.h: what the header compile tests share.  Each
 * t/header-NAME.c includes one public header alone and defines
 * deferred_test_header_NAME(), which returns 1 when a type that header
 * declares is usable.  Included after the public header under test.
 */
#ifndef DEFERRED_TEST_HEADER_ALONE_H
#define DEFERRED_TEST_HEADER_ALONE_H

#define DEFERRED_TEST_HEADER_COMMON_TYPE deferred_malloc_fn
#define DEFERRED_TEST_HEADER_VALUE_TYPE deferred_value_t
#define DEFERRED_TEST_HEADER_FAILURE_TYPE deferred_domain_t
#define DEFERRED_TEST_HEADER_CORE_TYPE deferred_report_t
#define DEFERRED_TEST_HEADER_MULTI_TYPE deferred_flow_fn
#define DEFERRED_TEST_HEADER_PROCESS_TYPE deferred_pred_fn
#define DEFERRED_TEST_HEADER_COMBINATORS_TYPE deferred_indexed_t
#define DEFERRED_TEST_HEADER_EV_TYPE deferred_ev_job_fn
#define DEFERRED_TEST_HEADER_ROW_TYPE deferred_param_t
#define DEFERRED_TEST_HEADER_ASYNC_TYPE deferred_async_iter_t
#define DEFERRED_TEST_HEADER_DUMP_TYPE deferred_dump_holder_t
#define DEFERRED_TEST_HEADER_LOOP_TYPE deferred_loop_ops_t
#define DEFERRED_TEST_HEADER_CLOCK_TYPE deferred_loop_t
#define DEFERRED_TEST_HEADER_UV_TYPE struct uv_loop_s *
#define DEFERRED_TEST_HEADER_GLIB_TYPE deferred_loop_ops_t

int deferred_test_header_common(void);
int deferred_test_header_value(void);
int deferred_test_header_failure(void);
int deferred_test_header_core(void);
int deferred_test_header_multi(void);
int deferred_test_header_process(void);
int deferred_test_header_combinators(void);
int deferred_test_header_ev(void);
int deferred_test_header_row(void);
int deferred_test_header_async(void);
int deferred_test_header_dump(void);
int deferred_test_header_loop(void);
int deferred_test_header_clock(void);
int deferred_test_header_uv(void);
int deferred_test_header_glib(void);

#endif /* DEFERRED_TEST_HEADER_ALONE_H */
