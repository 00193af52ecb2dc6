/* benchmarks/gemv_loop.c — single-token matmul timing without Python in the
 * loop: best of REPS calls of pyrt_matmul (one activation row) on random
 * blocks with small fp16 scales. Build against a built library:
 *   gcc -O2 benchmarks/gemv_loop.c -o /tmp/gemv_loop -Lbuild -lpyrt -Wl,-rpath,$PWD/build
 *   /tmp/gemv_loop TYPE ROWS COLS BLOCK_BYTES REPS [VARIANT [N_TOK [THREADS [COPIES]]]]
 * TYPE is the ggml id (2 Q4_0, 3 Q4_1, 6 Q5_0, 7 Q5_1, 8 Q8_0, 12 Q4_K, 13 Q5_K, 14 Q6_K), VARIANT
 * pyrt.h's PYRT_KERNELS_* (-1 auto). One thread unless THREADS; the checksum lets two builds'
 * results be compared (same inputs, same seed). COPIES > 1 keeps that many copies of the
 * matrix and runs rep r on copy r % COPIES, so a model-sized matrix (8192 x 2048: 9 MB)
 * is read from DRAM as in token generation instead of from the L3 cache.
 * THREADS < 0 runs -THREADS threads of its own, each calling pyrt_matmul with one
 * thread on its share of the rows, released together per rep: the multi-thread
 * figure without the thread pool pyrt_matmul starts and stops on every call
 * (30-50 us, more than a mid-size GEMV takes). */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
int pyrt_matmul(int32_t variant, int32_t wtype, const void *w, int64_t rows, int64_t cols,
                const float *x, int64_t n_tok, float *y, int32_t n_threads);
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
typedef struct {int v,type; const uint8_t*w; long rows,cols; const float*x; int nt; float*y; pthread_barrier_t*b; int reps; size_t stride; int ncp; double best;} job;
static void* runj(void*p){job*j=p; j->best=1e9; for(int r=0;r<j->reps;r++){pthread_barrier_wait(j->b); double t0=now(); pyrt_matmul(j->v,j->type,j->w+(size_t)(r%j->ncp)*j->stride,j->rows,j->cols,j->x,j->nt,j->y,1); pthread_barrier_wait(j->b); double dt=now()-t0; if(dt<j->best)j->best=dt;} return 0;}
int main(int argc,char**argv){
  int type=atoi(argv[1]); long rows=atol(argv[2]), cols=atol(argv[3]); int bb=atoi(argv[4]); int reps=atoi(argv[5]);
  int variant = argc>6?atoi(argv[6]):-1; int nt = argc>7?atoi(argv[7]):1; int nth = argc>8?atoi(argv[8]):1;
  int ncp = argc>9?atoi(argv[9]):1; if(ncp<1) ncp=1;
  int bs = (type==2||type==3||type==6||type==7||type==8)?32:256; /* elements per block */
  size_t nb = (size_t)rows*cols/bs*bb;
  size_t stride=(nb+63)/64*64; uint8_t *w=aligned_alloc(64,stride*ncp); srand(1); for(size_t i=0;i<nb;i++) w[i]=rand();
  /* small fp16 scales everywhere a scale could be: set d fields per block */
  size_t nblk=(size_t)rows*cols/bs;
  for(size_t b=0;b<nblk;b++){ uint8_t*p=w+b*bb; uint16_t h=0x1400; /* ~0.001 */
    if(type==14){memcpy(p+208,&h,2);} else if(type==12||type==13||type==3||type==7){memcpy(p,&h,2);memcpy(p+2,&h,2);} else memcpy(p,&h,2);}
  for(int c=1;c<ncp;c++) memcpy(w+c*stride,w,nb);
  float *x=malloc(cols*4*nt), *y=malloc(rows*4*nt); for(long i=0;i<cols*nt;i++) x[i]=(rand()%2000-1000)/1000.0f;
  double best=1e9;
  if(nth<0){ int T=-nth; pthread_t th[8]; job J[8]; pthread_barrier_t bar; pthread_barrier_init(&bar,0,T); long rb=(size_t)cols/bs*bb;
    for(int i=0;i<T;i++){ J[i]=(job){variant,type,w+(size_t)i*(rows/T)*rb,rows/T,cols,x,nt,y+(size_t)i*(rows/T)*nt,&bar,reps,stride,ncp,0}; pthread_create(&th[i],0,runj,&J[i]);}
    for(int i=0;i<T;i++){pthread_join(th[i],0); if(J[i].best<best) best=J[i].best;} reps=0; }
  for(int r=0;r<reps;r++){double t0=now(); pyrt_matmul(variant,type,w+(size_t)(r%ncp)*stride,rows,cols,x,nt,y,nth); double dt=now()-t0; if(dt<best)best=dt;}
  double cs=0; for(long i=0;i<rows*nt;i++) cs+=y[i];
  printf("type %d %ldx%ld nt=%d th=%d: best %.1f us, %.2f GB/s (checksum %.6g)\n",type,rows,cols,nt,nth,best*1e6,nb/best/1e9,cs);
  return 0;}
